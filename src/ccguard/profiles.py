"""Run profiles: how much data and training each of smoke, default and full does."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ccguard.augment import AugmentConfig
from ccguard.cascade import CascadeSpec
from ccguard.synth.conversations import ConversationConfig
from ccguard.synth.offline import SynthConfig
from ccguard.synth.responses import ResponseConfig
from ccguard.train.args import OutputTrainArgs, TrainArgs


@dataclass(frozen=True)
class Profile:
    """Everything a profile fixes. ``target_fpr`` is the benign false-positive rate thresholds aim for."""

    name: str
    synth: SynthConfig
    augment: AugmentConfig
    input_train: TrainArgs
    responses: ResponseConfig
    output_train: OutputTrainArgs
    target_fpr: float = 0.005  # on everyday traffic when hard_fpr is set (two-sided), else on all harmless val
    # Cap on the FPR of hard neighbours (harmless CBRN-adjacent, benign variants); on the output side, of the harmless
    # answers, which are such neighbours almost to a row (design/025).
    hard_fpr: float | None = 0.02
    family_fpr: float | None = 0.05  # also bound the FPR within each transform family of the hard neighbours
    calib_variants: float = 3.0  # extra augmented variants of each harmless val base, for a denser benign tail
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    eval_max_examples: int | None = None
    output_eval_max: int | None = None  # cap on output val and test exchanges scored for calibration and the report
    # Cap on the test prompts and test exchanges scored for the report alone (None: as above). Calibration is unchanged.
    test_max_examples: int | None = None
    # Cap on halted refusals of harmful requests (None: reported, not bound; halting one refuses no harmless user).
    output_refusal_fpr: float | None = None
    # With a backend (ccguard run --backend ...): one LLM-transformed variant for this fraction of base examples.
    llm_transforms: tuple[str, ...] = ("paraphrase", "translate", "persona_rewrite", "decompose")
    llm_transform_rate: float = 0.15
    llm_transform_max_tokens: int = 400
    # An input cascade (ccguard.cascade): stage 2 trained on this many training prompts, escalating this share of
    # everyday traffic. None: stage 1 alone.
    cascade: CascadeSpec | None = None
    cascade_train: int = 3000
    cascade_escalation: float = 0.03
    # For a stage 2 of kind 'classifier': how that second input classifier is trained (None: like input_train).
    cascade_classifier: TrainArgs | None = None
    # Multi-turn variants of the input side's base requests (crescendo build-ups and split requests). Off in every
    # profile: three default-profile runs with them moved the multi-turn checks both ways, within run-to-run noise
    # (design/015); `ccguard run --conversations RATE` turns them on.
    conversations: ConversationConfig = ConversationConfig()


PROFILES: dict[str, Profile] = {
    # About a minute on 2 cores: a truncated backbone and a sliver of the data. For tests, not for use.
    "smoke": Profile(
        name="smoke",
        synth=SynthConfig(queries_per_category=8, templates_per_category=3, fills_per_template=1, pool_size=80),
        augment=AugmentConfig(variants_per_example=0.7),
        input_train=TrainArgs(num_layers=3, max_len=64, stride=48, epochs=1.0, max_steps=60, batch_size=16),
        responses=ResponseConfig(queries_per_response=1, max_per_category=16, voice_variants=1, frame_rate=0.4, compose_rate=0.3,
                                 preamble_rate=0.12),
        output_train=OutputTrainArgs(num_layers=2, prompt_tokens=32, response_tokens=64, max_steps=30, batch_size=8),
        target_fpr=0.02,
        calib_variants=0.5,
        split_fractions=(0.6, 0.2, 0.2),
        eval_max_examples=150,
        test_max_examples=60,  # report numbers only; calibration still scores 300 val prompts
    ),
    # The shipped guard: about 23 minutes on 2 CPU cores in fp32, its output side in a second process (design/032;
    # 26 in one process, design/031).
    "default": Profile(
        name="default",
        # Harmless questions that name a harmful neighbour's agents (history, treatment, security), four per template
        # (design/027), and frame-matched intent pairs, three agents per pair (design/028).
        synth=SynthConfig(fills_per_template=2, neighbour_fills=4, pair_fills=3),
        augment=AugmentConfig(
            variants_per_example=1.0,
            family_weights={"encoding": 1.0, "style": 0.8, "framing": 1.8, "structure": 0.6, "keyword": 0.4},
        ),
        input_train=TrainArgs(max_len=128, stride=96, epochs=1.8, batch_size=16, max_steps=480),
        # Style balance: every exchange in five more voices, framed prompts, stitched answers, a harmless style twin of
        # every harmful seed answer and out-of-scope twins (about 14.7k training exchanges, 16.3k with the lead-ins; 14%
        # of the harmful ones verbatim seeds). 1,440 steps, about 0.7 of an epoch: 480 ranked CBRN content in other
        # voices worse (design/017).
        # The last 48 prompt tokens and the first 96 of the response: 16% fewer tokens a step than 64 and 128, with the
        # same real-shape checks over six seeds (design/023).
        # A harmless lead-in before 12% of the answers, of either label (design/024).
        responses=ResponseConfig(queries_per_response=3, voice_variants=5, frame_rate=0.4, compose_rate=0.8, amount_rate=0.2,
                                 preamble_rate=0.12),
        output_train=OutputTrainArgs(prompt_tokens=48, response_tokens=96, epochs=1.5, batch_size=8, max_steps=1440),
        calib_variants=1.5,
        output_eval_max=2000,
    ),
    # For a GPU or a long CPU run.
    "full": Profile(
        name="full",
        synth=SynthConfig(fills_per_template=4, phrasing_variants=0.5),
        augment=AugmentConfig(variants_per_example=3.0),
        input_train=TrainArgs(max_len=256, stride=192, epochs=3.0, batch_size=32),
        responses=ResponseConfig(queries_per_response=4, augment_rate=0.5, voice_variants=4, frame_rate=0.4, compose_rate=0.5),
        output_train=OutputTrainArgs(prompt_tokens=128, response_tokens=384, epochs=3.0, batch_size=16),
    ),
}
# The default guard trained to learn less from style (ccguard.train.debias): each training row weighted by how little
# the shortcut audit's topic-masked bag-of-words model, fitted out of fold, predicts its label. The strengths bring
# that model's AUROC, with the rows weighted as training weighs them, to about 0.64 on both sides (0.78 and 0.82 unweighted).
# Opt-in: its guard measured no gain on the real-shape checks and halts twice the refusals (design/021).
PROFILES["debiased"] = replace(
    PROFILES["default"],
    name="debiased",
    input_train=replace(PROFILES["default"].input_train, debias=0.75),
    output_train=replace(PROFILES["default"].output_train, debias=0.5),
)
# Trial (design/022): the output classifier starts from the trained input classifier's encoder, for half the steps.
# Not adopted: it blocked 71.9% of CBRN content in other voices against 82.5% for the same-sitting default.
PROFILES["warm-start"] = replace(
    PROFILES["default"],
    name="warm-start",
    output_train=replace(PROFILES["default"].output_train, init_from_input=True, max_steps=720),
)
# Trial (design/036): the constitution's crossed templates filled 4 times with harmful entities and 16 times with
# everyday things, so intent phrasing appears on both sides of the boundary. Not adopted: it takes the prompt audit
# from 0.778 to 0.710 (0.697 with the trial's 735 hand-written queries), and the input guard lost on the real-shape
# checks (with the queries: encoded CBRN requests 94.5% -> 80.8% blocked).
PROFILES["crossed"] = replace(
    PROFILES["default"],
    name="crossed",
    synth=replace(PROFILES["default"].synth, crossed_fills=4, crossed_harmless_fills=16),
)
# Trial (design/039): a copy of 15% of the exchanges, of either label, whose answer follows a harmless neighbour's
# answer (a history, a mechanism, a safety note). Not adopted. Where 0.6% of the benign exchanges are flagged, CBRN
# content behind such prose is blocked 45.0% / 27.5% of the time by the default (seeds 0 / 1) and 65.5% / 69.6% by this
# profile; with no prose, 93.0% / 78.9% by the default and 82.5% / 66.7% by this profile.
PROFILES["context"] = replace(
    PROFILES["default"],
    name="context",
    responses=replace(PROFILES["default"].responses, context_rate=0.15),
)
# The default guard plus the input cascade's second stage (Gemma 3 270M, read up to its 8th layer).
PROFILES["cascade"] = replace(PROFILES["default"], name="cascade", cascade=CascadeSpec())
# The default guard plus a fine-tuned multilingual-e5-small input classifier as the cascade's stage 2 (needs
# ccguard-classifiers[multilingual]): stage 1 stays the cheap English MiniLM, and the multilingual model reads only
# what stage 1 escalates.
PROFILES["cascade-multilingual"] = replace(
    PROFILES["default"],
    name="cascade-multilingual",
    cascade=CascadeSpec(kind="classifier", backbone="multilingual-e5-small"),
    cascade_classifier=replace(PROFILES["default"].input_train, backbone="multilingual-e5-small", freeze_embeddings=True),
)
# The default guard with a multilingual input classifier: multilingual-e5-small (needs ccguard-classifiers[multilingual]),
# its token embeddings frozen so that what the mostly English data teaches carries over to the other languages.
PROFILES["multilingual"] = replace(
    PROFILES["default"],
    name="multilingual",
    input_train=replace(PROFILES["default"].input_train, backbone="multilingual-e5-small", freeze_embeddings=True),
)
