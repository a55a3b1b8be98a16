"""Preferences (paper §5): a tournament over activities, Elo ratings, emotion–preference correlations and
steering the model's preferences with emotion vectors on the activities' own tokens.

Pipeline (each step reads the previous one's output):
1. `build_pair_prompts`: all ordered pairs "Would you prefer to (A) {a} or (B) {b}?" with the reply
   prefilled "(" (both A/B orders, which counterbalances position bias);
2. `run_tournament`: P(A) = softmax over the logits of the "A" and "B" tokens at each prompt's last real
   token. The prompts share a template prefix and, per A activity, a prefix up to "(B)"; their KV caches
   are computed once and reused, and only the suffixes are run, batched and sorted by length. Completed
   batches are checkpointed to disk so an interrupted tournament resumes to the same numbers;
3. `fit_elo`: Bradley–Terry maximum likelihood on the Elo scale (order-independent), mean fixed at 1500,
   soft outcomes (P(A)) or hard win/loss ("Hard Elo" for base models); `bootstrap_elo` resamples matchups;
4. `activity_emotion_scores`: cosine of each emotion vector with the residual on the activity's tokens in
   "How would you feel about {activity}?", averaged over tokens and the middle layers; Pearson r with Elo;
5. `run_preferences` also reruns the tournament with an emotion added on the tokens of a seeded half of
   the activities (`SpanSteering`) and reports the mean ΔElo of the steered half per emotion and strength.

Choices the paper leaves open (paper-notes §8.8) and what this module does: Elo = Bradley–Terry MLE with
one virtual draw per activity against a 1500 opponent (keeps ratings finite when an activity wins every
matchup), then shifted to mean 1500; "middle layers" = the middle third of the model, for read-out and
steering alike; the 32/32 split is drawn with a seed.
"""

from emovec.preferences.activities import Activity, load_activities
from emovec.preferences.elo import bootstrap_elo, fit_elo, rate
from emovec.preferences.prompts import PairPrompts, build_pair_prompts
from emovec.preferences.run import RESULT_NAME, run_preferences
from emovec.preferences.tournament import Tournament, run_tournament

__all__ = ["Activity", "PairPrompts", "RESULT_NAME", "Tournament", "bootstrap_elo", "build_pair_prompts", "fit_elo",
           "load_activities", "rate", "run_preferences", "run_tournament"]
