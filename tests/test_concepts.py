from emovec.concepts import check_emotions, closest, concepts
from emovec.errors import UnknownEmotionError
import pytest


def test_paper_lists_are_complete_and_consistent() -> None:
    c = concepts()
    assert len(c.emotions) == 171 and len(set(c.emotions)) == 171
    assert list(c.emotions) == sorted(c.emotions)  # alphabetical, as in the paper
    assert {"at ease", "on edge", "worn out", "grief-stricken", "hope", "hopeful", "aroused"} <= set(c.emotions)
    assert len(c.focal) == 12 and set(c.focal) <= set(c.emotions)
    members = [m for ms in c.clusters.values() for m in ms]
    assert len(c.clusters) == 10 and sorted(members) == sorted(c.emotions)
    assert len(c.topics) == 100 and len(set(c.topics)) == 100
    assert c.cluster_of("blissful") == "Exuberant Joy"


def test_misspelt_emotion_suggests_closest() -> None:
    assert closest("hapy", concepts().emotions)[0] == "happy"
    with pytest.raises(UnknownEmotionError, match=r"'hapy' \(did you mean: happy"):
        check_emotions(["afraid", "hapy"])
