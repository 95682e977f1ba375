"""The oracle's tally at the end of the short suite's pytest output."""
import oracle


def pytest_terminal_summary(terminalreporter):
    tally = oracle.SESSION
    if tally.verdicts or tally.latency:
        terminalreporter.write_sep("=", "guard oracle")
        for line in tally.table().splitlines():
            terminalreporter.write_line(line)
