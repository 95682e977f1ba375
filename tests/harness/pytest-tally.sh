# tests/harness/pytest-tally.sh — sourced by tests/run.sh and
# tests/today/check.sh: one reading of a pytest log's closing line.
#
#   pytest_tally LOG   prints "PASSED FAILED" (FAILED counts errors too;
#                      a log without a closing line counts as 1 failed:
#                      a run that crashed before pytest's summary is no pass)
pytest_tally() {
  local line p f e
  line=$(grep -E '[0-9]+ (passed|failed|error)' "$1" | tail -n 1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  [ -n "$line" ] || f=1
  echo "${p:-0} $(( ${f:-0} + ${e:-0} ))"
}
