#!/usr/bin/env bash
# Mutation testing of the math modules with their fast tests (mutmut 2.5, which runs each
# mutant's tests in a fresh process, as JAX needs). Run from the repository root:
#   pip install mutmut==2.5.1 && bash tests/mutation.sh [module ...]     # about an hour for all
# It works on a copy of the tree (mutmut edits files in place), prints each module's result and
# the surviving mutants' diffs. Later modules' math is added to TARGETS with its fast tests.
set -uo pipefail
declare -A TARGETS=(
  [hh/lm/step.py]="tests/test_lm_step.py::test_next_token_loss_and_gradient_match_float64 tests/test_lm_step.py::test_log_probs_match_float64_under_left_padding tests/test_lm_step.py::test_lm_loss_is_the_weighted_mean_token_loss tests/test_lm_step.py::test_fused_head_loss_and_its_gradients_match_float64 tests/test_lm_step.py::test_lm_loss_gives_the_plain_heads_loss_and_gradients_on_every_backends_path"
  [hh/pm/step.py]="tests/test_pm_step.py::test_preference_loss_and_gradient_match_float64 tests/test_pm_step.py::test_score_is_read_at_the_eoc_token_whatever_the_padding tests/test_pm_step.py::test_pm_loss_returns_the_weighted_mean_of_the_scored_pairs tests/test_stage.py::test_pm_step_learns_to_prefer_the_chosen_response tests/test_stage.py::test_harmless_weight_lambda_enters_the_loss_as_the_formula_says"
  [hh/pm/eval.py]="tests/test_pm_eval.py"
  [hh/elo.py]="tests/test_pm_eval.py"
  [hh/ppo/step.py]="tests/test_ppo.py"
  [hh/cd/step.py]="tests/test_best_of_n.py::test_cd_loss_is_the_51_way_kl_in_float64 tests/test_evaluate.py"
  [hh/policy/best_of_n.py]="tests/test_best_of_n.py"
  [hh/agreement.py]="tests/test_agreement.py"
  [hh/sim/labellers.py]="tests/test_agreement.py"
  [hh/models/head.py]="tests/test_head.py"
  [hh/models/attention.py]="tests/test_model.py::test_blockwise_attention_matches_float64_and_the_references_gradients_at_every_query tests/test_model.py::test_xla_fused_attention_matches_the_reference_and_float64_with_its_gradients tests/test_model.py::test_what_a_train_step_keeps_for_the_backward"
)
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(hh/lm/step.py hh/pm/step.py hh/pm/eval.py hh/elo.py \
  hh/ppo/step.py hh/cd/step.py hh/policy/best_of_n.py hh/agreement.py hh/sim/labellers.py \
  hh/models/attention.py hh/models/head.py)
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# XLA's persistent compilation cache: a mutant recompiles only what it changed (3× faster here)
export JAX_COMPILATION_CACHE_DIR="$work/jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
for module in "${modules[@]}"; do
  rm -rf "$work/tree" && mkdir -p "$work/tree"
  (cd "$root" && git ls-files -co --exclude-standard | grep -v '^docs/figures/' | \
     tar -cf - -T - ) | tar -xf - -C "$work/tree"
  # -n 0: with xdist, -x ends in exit code 2 (interrupted), which mutmut 2 counts as a pass
  runner="python -m pytest -x -q -n 0 -p no:cacheprovider ${TARGETS[$module]}"
  echo "== $module: $runner"
  (cd "$work/tree" && export PYTHONPATH="$work/tree" && \
   mutmut run --paths-to-mutate "$module" --runner "$runner" --no-progress > "$work/run.log" 2>&1; \
   mutmut results; \
   for id in $(mutmut result-ids survived 2>/dev/null); do echo "--- survivor $id"; \
     mutmut show "$id"; done)
done
