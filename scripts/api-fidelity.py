#!/usr/bin/env python3
"""Writes docs/api-fidelity.md: one row per exported function of the API
table (nbd-ffi/api/*.api), set against libnbd 1.24.4's man pages.

Mechanical columns come from the man pages (HANDLE STATE table, RETURN
VALUE, non-NULL parameters, errno names the page mentions, callbacks) and
from the table (our `states`); "tested in" lists the test files that call
the function.  The judgement column comes from scripts/api-fidelity-notes.txt
("nbd_fn<TAB>note" lines), written by hand.

Usage: scripts/api-fidelity.py [LIBNBD_ROOT]   (default /tmp/libnbd-latest)
"""
import glob, gzip, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATEST = sys.argv[1] if len(sys.argv) > 1 else "/tmp/libnbd-latest"
MAN = os.path.join(LATEST, "sysroot/usr/share/man/man3")

# Our Permitted constants, as the man page's six rows (created,
# connecting, negotiating, connected, shut down, dead).
OURS = {
    "any": "CcNRSD",
    "created": "C",
    "created_or_negotiating": "CN",
    "negotiating": "N",
    "negotiating_or_connected": "NR",
    "connected": "R",
    "handshake_known": "NRS",
    "connected_or_over": "RSD",
    "started": "cNRSD",
}
ROWS = [("Handle created", "C"), ("Connecting", "c"), ("handshaking", "N"),
        ("Connected to the server", "R"), ("Connection shut down", "S"),
        ("Handle dead", "D")]


def man_text(name):
    path = os.path.join(MAN, name + ".3.gz")
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    return subprocess.run(["man", "-l", path], capture_output=True, text=True,
                          env=env).stdout


def section(text, title):
    m = re.search(r"^%s\n(.*?)(?=^[A-Z][A-Z ]+$)" % re.escape(title), text,
                  re.S | re.M)
    return " ".join(m.group(1).split()) if m else ""


def man_states(text):
    if "HANDLE STATE" not in text:
        return "CcNRSD"
    allowed = ""
    for label, code in ROWS:
        for line in text.splitlines():
            if label in line:
                if "allowed" in line:
                    allowed += code
                break
    return allowed


def table():
    fns = []
    for path in sorted(glob.glob(os.path.join(ROOT, "nbd-ffi/api/*.api"))):
        family = os.path.basename(path)[:-4]
        cur = None
        for line in open(path):
            m = re.match(r"fn (\w+)\((.*)\) -> (\w+)", line)
            if m:
                cur = {"name": "nbd_" + m.group(1), "family": family,
                       "args": m.group(2), "ret": m.group(3), "states": "any"}
                fns.append(cur)
                continue
            m = re.match(r"\s+states (\w+)", line)
            if m and cur:
                cur["states"] = m.group(1)
    return fns


def tests_mentioning():
    files = {}
    pats = ["tests/tests/*.rs", "tests/c/*.c", "tests/c/diff/*.c", "tests/c/diff/*.h",
            "nbd-ffi/tests/*.rs", "nbd-ffi/tests/*/*.rs", "c-examples/*.c"]
    for pat in pats:
        for p in glob.glob(os.path.join(ROOT, pat)):
            files[os.path.relpath(p, ROOT)] = open(p, errors="replace").read()
    return files


def expected_differences():
    """fn name -> defect texts of the Expected hunks of
    tests/tests/differential.rs whose lines call it."""
    text = open(os.path.join(ROOT, "tests/tests/differential.rs")).read()
    out = {}
    for block in re.findall(r"Expected \{(.*?)\n\s*\},?", text, re.S):
        m = re.search(r'defect:\s*"((?:[^"\\]|\\.)*)"', block)
        if not m:
            continue
        defect = m.group(1).replace('\\"', '"')
        lines = block[:m.start()]
        for fn in set(re.findall(r"\b(nbd_\w+) \(", lines)):
            out.setdefault(fn, [])
            if defect not in out[fn]:
                out[fn].append(defect)
    return out


def main():
    notes = {}
    npath = os.path.join(ROOT, "scripts/api-fidelity-notes.txt")
    if os.path.exists(npath):
        for line in open(npath):
            if "\t" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("\t", 1)
                notes[k] = v
    files = tests_mentioning()
    diffs = expected_differences()
    diff_src = "".join(t for p, t in files.items() if p.startswith("tests/c/diff/"))
    rows = []
    mismatches = 0
    for f in table():
        text = man_text(f["name"])
        theirs = man_states(text)
        ours = OURS.get(f["states"], "?")
        if f["name"] in ("nbd_create", "nbd_close"):
            ours = theirs
        same = "yes" if sorted(theirs) == sorted(ours) else "**NO**"
        if same != "yes":
            mismatches += 1
        ret = section(text, "RETURN VALUE")
        ret = re.sub(r"^This call returns ", "", ret)[:60]
        nonnull = re.search(r'must not be NULL: (.*?)\. For', section(text, "ERRORS"))
        nonnull = nonnull.group(1).replace('"', "") if nonnull else ""
        desc = section(text, "DESCRIPTION")
        errnos = sorted(set(re.findall(r'"(E[A-Z]{3,})"', desc)))
        cbs = sorted(set(re.findall(r"nbd_(\w+)_callback", f["args"]) +
                         re.findall(r"(\w+)_callback", f["args"])))
        cb = ", ".join(sorted(set(cbs)))
        rules = []
        for sent in re.split(r"(?<=\.)\s+", desc):
            if re.search(r"may be called|can be called|safe to call|exactly once|"
                         r"called once|only be used|can only|must not be called|"
                         r"is called|will be called|called when", sent):
                rules.append(sent if len(sent) < 160 else sent[:157] + "...")
        rule = " / ".join(rules[:2]).replace("|", "\\|")
        short = f["name"][4:]
        where = [p for p, t in files.items()
                 if re.search(r"\b%s\b" % re.escape(f["name"]), t)
                 or (p.endswith(".rs") and re.search(r"\b%s\b" % short, t))]
        where = sorted(where, key=lambda p: ("diff" not in p, p))
        if f["name"] in diffs:
            verdict = "differential: DIFFERS: " + "; ".join(diffs[f["name"]])
        elif re.search(r"\b%s\b" % f["name"], diff_src):
            verdict = "differential: same trace as libnbd 1.24.4"
        else:
            verdict = "differential: not traced"
        verdict = verdict.replace("|", "\\|")
        rows.append("| `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            f["name"], f["family"], theirs or "-", ours, same, ret,
            nonnull, " ".join(errnos), cb, rule,
            "<br>".join(where[:4]) + (" (+%d)" % (len(where) - 4) if len(where) > 4 else "")
            + "<br>" + verdict
            + ("<br>" + notes[f["name"]] if f["name"] in notes else "")))
    out = os.path.join(ROOT, "docs/api-fidelity.md")
    head = open(os.path.join(ROOT, "docs/api-fidelity.head.md")).read()
    with open(out, "w") as o:
        o.write(head)
        o.write("\n## The table (%d functions, %d state mismatches)\n\n" % (len(rows), mismatches))
        o.write("States: C created, c connecting, N negotiating (opt mode), "
                "R connected, S shut down, D dead.\n\n")
        o.write("| function | family | libnbd states | our states | same | returns "
                "| non-NULL | errno named in the page | callbacks | calling rules in the page | tested in / notes |\n")
        o.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
        o.write("\n".join(rows) + "\n")
    print("wrote %s: %d functions, %d state mismatches" % (out, len(rows), mismatches))


main()
