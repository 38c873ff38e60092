"""The names of the metrics the engine writes, for whoever reads them back: the Django app (runs,
model versions, promotion gates), the CLI's summary line, the benchmarks.

A loop reports each metric under one of these names, per step ("train") and on held-out data
("eval"); an artifact stores them flat with a split prefix (runtime.final_metrics), e.g.
EVAL_ACCURACY. The values are a stored format: rename a constant freely, never its string.
"""

from __future__ import annotations

# --- every optimisation loop (runtime.optimize, ppo.py) ------------------------------------------
LOSS = "loss"
LEARNING_RATE = "learning_rate"
GRAD_NORM = "grad_norm"  # before clipping
SAMPLES_PER_S = "samples_per_s"  # pairs (reward, DPO) or answers (online RL) per second
TOKENS_PER_S = "tokens_per_s"  # trained tokens (reward, DPO) or sampled ones (online RL)

# --- the reward model: losses.bradley_terry_loss, reward.evaluate ------------------------------
ACCURACY = "accuracy"  # pairwise: the human choice scored higher, over decided (non-tie) pairs
DECIDED = "decided"  # pairs that are not ties
MARGIN = "margin"  # mean reward of chosen minus rejected
CHOSEN_REWARD = "chosen"
REJECTED_REWARD = "rejected"
PAIRS = "pairs"  # reward.evaluate_reward_model: pairs scored

# --- DPO: losses.dpo_loss (TRL's names; the implicit reward is beta * log(pi / ref)) ------------
DPO_REWARDS_CHOSEN = "rewards/chosen"
DPO_REWARDS_REJECTED = "rewards/rejected"
DPO_REWARDS_ACCURACY = "rewards/accuracy"  # the chosen answer's implicit reward is higher
DPO_REWARDS_MARGIN = "rewards/margin"

# --- online RL (ppo.py): one rollout and its update --------------------------------------------
SCORE = "score"  # what the reward said, mean per answer
REWARD = "reward"  # the score after the missing-eos penalty and clipping
KL = "kl"  # nats per answer against the reference (here and in the promotion gate)
KL_COEF = "kl_coef"  # beta
TOTAL_REWARD = "total_reward"  # reward - beta * KL
ENTROPY = "entropy"  # per answer token
ANSWER_LENGTH = "answer_length"  # tokens
FINISHED = "finished"  # share of answers that ended with a stop token
VALUE = "value"  # PPO: mean value-head estimate
EXPLAINED_VARIANCE = "explained_variance"  # PPO: of the returns by the value head
POLICY_LOSS = "policy_loss"
VALUE_LOSS = "value_loss"  # PPO
CLIPFRAC = "clipfrac"
APPROX_KL = "approx_kl"  # KL(old || new) over one update
RATIO = "ratio"
VALUE_CLIPFRAC = "value_clipfrac"  # PPO
UPDATE_TOKENS_PER_S = "update_tokens_per_s"
SECONDS_GENERATION = "seconds_generation"  # sampling, scoring and log-probs of the rollout
SECONDS_UPDATE = "seconds_update"

# --- promotion gates: evaluate.PolicyEvaluation.summary ----------------------------------------
WIN_RATE = "win_rate"  # against the parent, judged by the reward model; a tie counts half
# KL (above): exact KL to the reference, nats per answer.
HELDOUT_ACCURACY = "heldout_accuracy"  # implicit-reward accuracy on unseen human pairs
HELDOUT_PAIRS = "heldout_pairs"
PROMPTS = "prompts"
CANDIDATE_TOKENS = "candidate_tokens"  # mean answer length
PARENT_TOKENS = "parent_tokens"
GATE_METRICS = (WIN_RATE, KL, HELDOUT_ACCURACY)

# --- an artifact's metrics: the last train step's and the last evaluation's, prefixed ----------
TRAIN_PREFIX = "train_"
EVAL_PREFIX = "eval_"


def train_metric(name: str) -> str:
    return TRAIN_PREFIX + name


def eval_metric(name: str) -> str:
    return EVAL_PREFIX + name


TRAIN_LOSS = train_metric(LOSS)
EVAL_LOSS = eval_metric(LOSS)
# The reward model's held-out accuracy and loss as train_reward stores them in its artifact.
EVAL_ACCURACY = eval_metric(ACCURACY)
EVAL_DPO_REWARDS_ACCURACY = eval_metric(DPO_REWARDS_ACCURACY)
