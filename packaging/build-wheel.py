#!/usr/bin/python3
"""make wheel: the Python wheel, written with the standard library only (no PyPI).

    packaging/build-wheel.py --lib LIB --cli CLI --version V --out-dir DIR
                             [--mtime EPOCH]

A wheel is a zip archive (PEP 427, PEP 491): the package's files, then
migshim-V.dist-info/ with METADATA, WHEEL, entry_points.txt, top_level.txt and
RECORD (every file's sha256, urlsafe base64 without padding, and size).  The
package `migshim` holds

    migshim/__init__.py     the launcher (packaging/wheel/migshim/): main() execs
    migshim/__main__.py     the bundled command with the arguments unchanged
    migshim/migshim         the C command (stripped; mode 0755)
    migshim/libmigshim.so   the library (stripped), next to the command, which
                            finds it there (src/cli.c, library_path)

and the console script `migshim = migshim:main`.

The tag is the C library's the three files were built against, read from the
files (readelf -d, -l), never assumed:

  glibc  py3-none-manylinux_2_X_ARCH: the launcher runs on any Python 3, and 2.X
         is the newest GLIBC_ symbol version that either library or the
         command needs, read from their dynamic symbol tables (objdump -T);
  musl   py3-none-musllinux_1_Y_ARCH: 1.Y is the version of the musl the command
         runs on, as its program interpreter (/lib/ld-musl-ARCH.so.1) prints it
         when run without arguments ("Version 1.2.3"; that loader is musl's
         libc.so, the one musl-gcc links against), else Debian's musl package
         version (dpkg-query -W musl).

A file is musl's when it needs musl's libc (NEEDED libc.so, as Debian's
musl-gcc links, or libc.musl-ARCH.so.1, as Alpine's) and no GLIBC_ version,
and, for the command, its interpreter is /lib/ld-musl-*; glibc's when it needs
libc.so.6 and, for the command, its interpreter is ld-linux-* / ld64.so.*.
Refused, with one line naming the cause: the libraries and the command of two
C libraries (or of neither), a file that needs a library outside the
manylinux policy's list (musllinux: musl's libc and libgcc_s), GLIBC_PRIVATE,
or files of different machines.

Prints: build-wheel.py: PATH (N bytes; GLIBC_2.X needed by FILE for SYMBOL)
        build-wheel.py: PATH (N bytes; musl 1.2.3, from LOADER)
"""
import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "wheel", "migshim")
NAME = "migshim"

# PEP 600 / auditwheel's manylinux policy: the libraries a wheel may link to.
ALLOWED_NEEDED = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
    "libutil.so.1", "libresolv.so.2", "libcrypt.so.1", "libgcc_s.so.1",
    "libstdc++.so.6", "libnsl.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
# auditwheel's musllinux policy, with Debian musl-gcc's name for musl's libc:
# musl's loader takes any libc.so* as itself, on Alpine too.
MUSL_NEEDED = re.compile(r"libc\.so|libc\.musl-[a-z0-9_]+\.so\.1")
MUSL_ALLOWED_NEEDED = {"libgcc_s.so.1"}
MACHINES = {"Advanced Micro Devices X86-64": "x86_64", "AArch64": "aarch64",
            "Intel 80386": "i686"}

SUMMARY = ("One process of a fleet runs the database migrations at start-up, the others "
           "wait: a libpq LD_PRELOAD library for Alembic and Django apps")
DESCRIPTION = """\
migshim serializes a fleet's start-up migrations (Alembic's `upgrade head`,
Django's `migrate`) with a PostgreSQL advisory lock, without changing the app:
libmigshim.so is preloaded into the unmodified processes and gates their
PostgreSQL connections: libpq's, and asyncpg's and pg8000's.

    migshim -- gunicorn app:app          run a command with the library preloaded
    migshim --lib-path                   the library's path, for ENV LD_PRELOAD=...
    migshim status / heads / timeline    what the gate sees

This wheel holds the C library, the C command and a launcher only.
"""


class Refused(Exception):
    pass


def run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if r.returncode != 0:
        raise Refused("%s failed: %s" % (" ".join(argv), r.stderr.strip()))
    return r.stdout


def machine(path):
    m = re.search(r"^\s*Machine:\s*(.+?)\s*$", run(["readelf", "-hW", path]), re.M)
    if not m or m.group(1) not in MACHINES:
        raise Refused("%s: a machine this builder has no wheel tag for (%s)"
                      % (path, m.group(1) if m else "no ELF header"))
    return MACHINES[m.group(1)]


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                      run(["readelf", "-dW", path]))


def glibc_needs(path):
    """{(major, minor): [symbol, ...]} of the undefined dynamic symbols that
    carry a GLIBC_ version (objdump -T); refuses GLIBC_PRIVATE."""
    out = {}
    for line in run(["objdump", "-T", path]).splitlines():
        if "*UND*" not in line:
            continue
        m = re.search(r"\(?\bGLIBC_([0-9.]+|PRIVATE)\)?\s+(\S+)\s*$", line)
        if not m:
            continue
        if m.group(1) == "PRIVATE":
            raise Refused("%s needs GLIBC_PRIVATE (%s): no manylinux tag allows it"
                          % (path, m.group(2)))
        parts = [int(x) for x in m.group(1).split(".")]
        out.setdefault((parts[0], parts[1] if len(parts) > 1 else 0), []).append(m.group(2))
    return out


def interpreter(path):
    """The program interpreter (PT_INTERP) of an executable, or None."""
    m = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", run(["readelf", "-lW", path]))
    return m.group(1) if m else None


def libc_of(path, is_command):
    """('glibc' | 'musl' | None, the evidence): the C library a file was built
    against, from its NEEDED list and, for the command, its interpreter."""
    libs = needed(path)
    libc = [n for n in libs if n == "libc.so.6" or MUSL_NEEDED.fullmatch(n)]
    kind = None
    if libc == ["libc.so.6"]:
        kind = "glibc"
    elif len(libc) == 1:
        kind = "musl"
    why = "NEEDED %s" % (", ".join(libc) or "no libc")
    if is_command:
        interp = interpreter(path)
        base = os.path.basename(interp or "")
        ikind = ("musl" if base.startswith("ld-musl-") else
                 "glibc" if base.startswith(("ld-linux", "ld64.so")) else None)
        why += ", interpreter %s" % (interp or "none")
        if ikind != kind:
            kind = None
    return kind, why


def musl_version(loader):
    """(major, minor, 'musl X.Y.Z, from SOURCE'): the loader's own banner, else dpkg's."""
    text, source = "", ""
    if loader and os.path.exists(loader):
        r = subprocess.run([loader], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        text, source = r.stderr, loader
    m = re.search(r"^Version ([0-9]+)\.([0-9]+)(\.[0-9]+)?", text, re.M)
    if not m:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "musl"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True) if shutil.which("dpkg-query") else None
        text, source = (r.stdout if r and r.returncode == 0 else ""), "dpkg-query -W musl"
        m = re.match(r"(?:[0-9]+:)?([0-9]+)\.([0-9]+)(\.[0-9]+)?", text)
    if not m:
        raise Refused("cannot tell the musl version: %s prints none, and dpkg-query knows "
                      "no musl package" % (loader or "no musl loader"))
    return (int(m.group(1)), int(m.group(2)),
            "musl %s.%s%s, from %s" % (m.group(1), m.group(2), m.group(3) or "", source))


def platform_tag(libs, cli):
    """(tag, why) for the libraries and the command: manylinux_2_X_ARCH with why
    'GLIBC_2.X needed by FILE for SYMBOL', or musllinux_1_Y_ARCH with 'musl 1.Y.Z, from ...'."""
    files = list(libs) + [cli]
    arches = {machine(f) for f in files}
    if len(arches) != 1:
        raise Refused("the files are built for different machines: %s" % sorted(arches))
    arch = arches.pop()
    ckind, cwhy = libc_of(cli, True)
    for lib in libs:
        lkind, lwhy = libc_of(lib, False)
        if lkind is None or ckind is None or lkind != ckind:
            raise Refused("the library and the command must be built for one C library: "
                          "%s is %s (%s), %s is %s (%s)"
                          % (lib, lkind or "neither glibc's nor musl's", lwhy,
                             cli, ckind or "neither glibc's nor musl's", cwhy))
    lkind = ckind
    if lkind == "musl":
        for f in files:
            bad = [n for n in needed(f)
                   if not MUSL_NEEDED.fullmatch(n) and n not in MUSL_ALLOWED_NEEDED]
            if bad:
                raise Refused("%s needs %s: not a library the musllinux policy allows"
                              % (f, ", ".join(bad)))
            if glibc_needs(f):
                raise Refused("%s needs GLIBC_ symbol versions: not a musl build" % f)
        major, minor, why = musl_version(interpreter(cli))
        return "musllinux_%d_%d_%s" % (major, minor, arch), why
    best, why = None, ""
    for f in files:
        bad = [n for n in needed(f) if n not in ALLOWED_NEEDED]
        if bad:
            raise Refused("%s needs %s: not a library the manylinux policy allows"
                          % (f, ", ".join(bad)))
        for ver, syms in glibc_needs(f).items():
            if best is None or ver > best:
                best, why = ver, "%s for %s" % (os.path.basename(f), sorted(syms)[0])
    if best is None:
        raise Refused("%s: no GLIBC_ symbol version at all: not a glibc build"
                      % ", ".join(files))
    return ("manylinux_%d_%d_%s" % (best[0], best[1], arch),
            "GLIBC_%d.%d needed by %s" % (best[0], best[1], why))


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build(lib, cli, version, out_dir, mtime):
    for f in (lib, cli):
        if not os.path.isfile(f):
            raise Refused("%s: no such file (make builds it)" % f)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise Refused("version %r is not a plain release number" % version)
    tag, why = platform_tag([lib], cli)
    stage = tempfile.mkdtemp(prefix="migshim-wheel.")
    try:
        slib, scli = os.path.join(stage, "libmigshim.so"), os.path.join(stage, "migshim")
        shutil.copyfile(lib, slib)
        shutil.copyfile(cli, scli)
        # as the Debian package does (packaging/build-deb.sh)
        run(["strip", "--strip-unneeded", "--remove-section=.comment",
             "--remove-section=.note", slib])
        run(["strip", "--strip-all", "--remove-section=.comment", "--remove-section=.note",
             scli])
        with open(os.path.join(LAUNCHER, "__init__.py"), encoding="utf-8") as f:
            init = f.read()
        if "@VERSION@" not in init:
            raise Refused("%s has no @VERSION@ to fill in" % LAUNCHER)
        with open(os.path.join(LAUNCHER, "__main__.py"), "rb") as f:
            main_py = f.read()
        with open(slib, "rb") as f:
            lib_bytes = f.read()
        with open(scli, "rb") as f:
            cli_bytes = f.read()
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    dist_info = "%s-%s.dist-info" % (NAME, version)
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        "Name: %s" % NAME,
        "Version: %s" % version,
        "Summary: %s" % SUMMARY,
        "License: unspecified",
        "Classifier: Operating System :: POSIX :: Linux",
        "Classifier: Programming Language :: C",
        "Classifier: Topic :: Database",
        "Requires-Python: >=3.6",
        "Description-Content-Type: text/plain",
        "",
        DESCRIPTION,
    ])
    wheel = "\n".join([
        "Wheel-Version: 1.0",
        "Generator: migshim packaging/build-wheel.py",
        "Root-Is-Purelib: false",
        "Tag: py3-none-%s" % tag,
        "",
    ])
    # (path, bytes, mode): the package first, the .dist-info last, RECORD at the end
    files = [
        ("migshim/__init__.py", init.replace("@VERSION@", version).encode("utf-8"), 0o644),
        ("migshim/__main__.py", main_py, 0o644),
        ("migshim/libmigshim.so", lib_bytes, 0o644),
        ("migshim/migshim", cli_bytes, 0o755),
        (dist_info + "/METADATA", metadata.encode("utf-8"), 0o644),
        (dist_info + "/WHEEL", wheel.encode("utf-8"), 0o644),
        (dist_info + "/entry_points.txt", b"[console_scripts]\nmigshim = migshim:main\n",
         0o644),
        (dist_info + "/top_level.txt", b"migshim\n", 0o644),
    ]
    rec = io.StringIO()
    w = csv.writer(rec, lineterminator="\n")
    for path, data, _ in files:
        w.writerow([path, record_hash(data), len(data)])
    w.writerow([dist_info + "/RECORD", "", ""])
    files.append((dist_info + "/RECORD", rec.getvalue().encode("utf-8"), 0o644))

    os.makedirs(out_dir, exist_ok=True)
    name = "%s-%s-py3-none-%s.whl" % (NAME, version, tag)
    path = os.path.join(out_dir, name)
    stamp = time.gmtime(max(mtime, 315532800))[:6]    # a zip's clock starts in 1980
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p, data, mode in files:
            info = zipfile.ZipInfo(p, date_time=stamp)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3      # Unix: the mode above means something
            z.writestr(info, data)
    verify(tmp, dist_info)
    os.replace(tmp, path)
    return path, why


def verify(path, dist_info):
    """Read the archive back: every file but RECORD listed in RECORD, with its hash."""
    with zipfile.ZipFile(path) as z:
        rows = {r[0]: r[1:] for r in csv.reader(
            io.StringIO(z.read(dist_info + "/RECORD").decode("utf-8")))}
        names = z.namelist()
        if sorted(names) != sorted(rows):
            raise Refused("RECORD lists %s, the archive holds %s" % (sorted(rows), sorted(names)))
        for n in names:
            if n.endswith("/RECORD"):
                continue
            data = z.read(n)
            if rows[n] != [record_hash(data), str(len(data))]:
                raise Refused("RECORD's entry for %s does not match its contents" % n)


def main():
    ap = argparse.ArgumentParser(description="build the migshim wheel (stdlib only)")
    ap.add_argument("--lib", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--mtime", type=int,
                    default=int(os.environ.get("SOURCE_DATE_EPOCH") or time.time()))
    a = ap.parse_args()
    try:
        path, why = build(a.lib, a.cli, a.version, a.out_dir, a.mtime)
    except Refused as e:
        sys.stderr.write("build-wheel.py: %s\n" % e)
        return 1
    print("build-wheel.py: %s (%d bytes; %s)" % (path, os.path.getsize(path), why))
    return 0


if __name__ == "__main__":
    sys.exit(main())
