"""emovec: find, test and use emotion vectors inside open-weight language models.

    model = emovec.load_model("smollm2-135m")
    vecs = emovec.extract(model, emovec.load_corpus())
"""

from emovec.concepts import concepts
from emovec.corpus import Corpus, load_corpus
from emovec.errors import EmovecError
from emovec.models import LoadedModel, load_model
from emovec.vectors import EmotionVectors, extract

__all__ = ["Corpus", "EmotionVectors", "EmovecError", "LoadedModel", "concepts", "extract", "load_corpus", "load_model"]
__version__ = "0.1.0"
