#!/usr/bin/python3
"""compare.py SUITE PLAIN.xml[,RERUN.xml...] PRELOADED.xml[,RERUN.xml...] [SUITE ...]
compare.py --differing PLAIN.xml PRELOADED.xml

The verdict of every test id (passed, failed, error, skipped) in the JUnit
files of each suite's plain and preloaded runs, compared.  The first file of
each side is the whole suite's run; the others (run.sh's reruns of the ids
that differed) add verdicts for some ids.  An id's verdicts differ when the
two sides' sets of verdicts are not the same; such a difference is let pass
as "nondeterministic without the preload" only when the plain side holds more
than one verdict and the preloaded side none but those.

Prints one row per suite (the counts of the first runs and how many ids
differ) and the shim's lines in the first runs (the preloaded run must have
led at least once: the shim was active; the plain run has none), then each
differing id with its verdicts, then the ids that do not pass in both runs
(the same verdict: allowed, reported).  Exits 1 when any id differs, a run
left no JUnit file or no test, or the shim's lines are not as said; 0
otherwise.

--differing prints the pytest node ids (path::Class::test) whose verdicts
differ between the two files, one a line: run.sh runs them again.
"""
import re
import sys
import xml.etree.ElementTree as ET

KINDS = ("passed", "failed", "skipped", "error")


def verdicts(path):
    """{test id: verdict}; None when the file is missing or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    out = {}
    for tc in root.iter("testcase"):
        tid = "%s::%s" % (tc.get("classname", ""), tc.get("name", ""))
        tags = {child.tag for child in tc}
        if "error" in tags:
            v = "error"
        elif "failure" in tags:
            v = "failed"
        elif "skipped" in tags:
            v = "skipped"
        else:
            v = "passed"
        # a test that failed and then errored in its teardown is two entries
        if tid in out and out[tid] != v:
            v = "+".join(sorted({out[tid], v}))
        out[tid] = v
    return out


SHIM_LINE = re.compile(r"^migshim\[\d+\]: (\w+): (.*)$", re.M)


def shim_lines(path):
    """The shim's lines in a run's captured stderr (run.sh asks pytest to
    keep it in the JUnit file): {level: count}, and how many say "leading"."""
    levels, leading = {}, 0
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return levels, leading
    for el in root.iter("system-err"):
        for level, text in SHIM_LINE.findall(el.text or ""):
            levels[level] = levels.get(level, 0) + 1
            leading += "leading:" in text
    return levels, leading


def counts(vs):
    c = dict.fromkeys(KINDS, 0)
    for v in vs.values():
        for part in v.split("+"):
            c[part] += 1
    return "/".join(str(c[k]) for k in KINDS)


def node_id(tid):
    """pytest's node id of a JUnit id (xunit1: classname is the module's
    path in dots, then the class: every test of these suites is a method)."""
    classname, name = tid.split("::", 1)
    module, _, cls = classname.rpartition(".")
    return "%s.py::%s::%s" % (module.replace(".", "/"), cls, name)


def differing(plain_path, pre_path):
    plain, pre = verdicts(plain_path), verdicts(pre_path)
    if not plain or not pre:
        return 0
    for t in sorted(set(plain) | set(pre)):
        if plain.get(t) != pre.get(t):
            print(node_id(t))
    return 0


def side(paths):
    """The first file's verdicts, and every id's set of verdicts over all."""
    first, seen = None, {}
    for i, path in enumerate(paths.split(",")):
        vs = verdicts(path)
        if i == 0:
            first = vs
            if not vs:
                return None, None
        for t, v in (vs or {}).items():
            seen.setdefault(t, set()).add(v)
    return first, seen


def main(argv):
    if argv[:1] == ["--differing"] and len(argv) == 3:
        return differing(argv[1], argv[2])
    if len(argv) % 3 or not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    bad = False
    rows, details, flaky, both, shim = [], [], [], [], []
    for i in range(0, len(argv), 3):
        suite, plain_paths, pre_paths = argv[i:i + 3]
        (plain, pseen), (pre, qseen) = side(plain_paths), side(pre_paths)
        if not plain or not pre:
            rows.append((suite, counts(plain) if plain else "no result",
                         counts(pre) if pre else "no result", "-"))
            bad = True
            continue
        ndiff = 0
        for t in sorted(set(pseen) | set(qseen)):
            p, q = pseen.get(t, {"absent"}), qseen.get(t, {"absent"})
            if p == q and len(p) == 1:
                continue
            line = "  %s: %s: plain %s, preloaded %s" % (
                suite, t, "/".join(sorted(p)), "/".join(sorted(q)))
            if len(p) > 1 and q <= p:
                flaky.append(line)
            else:
                details.append(line)
                ndiff += 1
        rows.append((suite, counts(plain), counts(pre), str(ndiff)))
        bad = bad or ndiff > 0
        plain_lines, _ = shim_lines(plain_paths.split(",")[0])
        pre_lines, leading = shim_lines(pre_paths.split(",")[0])
        shim.append("  %s: preloaded: %s line(s) of the shim (%s), %d leading; plain: %d"
                    % (suite, sum(pre_lines.values()),
                       ", ".join("%s %d" % kv for kv in sorted(pre_lines.items())) or "none",
                       leading, sum(plain_lines.values())))
        if not leading or plain_lines:
            shim.append("  %s: the shim %s" % (suite, "printed lines in the plain run" if plain_lines
                                                else "never led in the preloaded run: not active?"))
            bad = True
        for t in sorted(plain):
            if plain[t] not in ("passed", "skipped") and plain[t] == pre.get(t):
                both.append("  %s: %s: %s in both runs" % (suite, t, plain[t]))
    w = max(len(r[0]) for r in rows + [("suite",)])
    print("%-*s  %-22s  %-22s  %s" % (w, "suite", "plain p/f/s/e", "preloaded p/f/s/e", "differing"))
    for r in rows:
        print("%-*s  %-22s  %-22s  %s" % (w, *r))
    print("\n".join(shim))
    if details:
        print("differing verdicts (first run and reruns):")
        print("\n".join(details))
    if flaky:
        print("nondeterministic without the preload (let pass):")
        print("\n".join(flaky))
    if both:
        print("not passing, the same with and without the preload:")
        print("\n".join(both))
    print("driver-suites: %s" % ("the verdicts DIFFER (or a run left no result)" if bad
                                 else "the same verdicts with and without the preload"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
