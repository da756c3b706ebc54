#!/usr/bin/env python3
"""Compares an Autobahn (kosoku) report with the committed expected results.

    compare.py EXPECTED.json REPORT_DIR/index.json           # exit 1 on any regression
    compare.py EXPECTED.json REPORT_DIR/index.json --update  # rewrite EXPECTED.json

A case regresses when its `behavior` or `behaviorClose` ranks worse than expected
(OK/INFORMATIONAL < NON-STRICT < UNIMPLEMENTED/WRONG CODE/UNCLEAN < FAILED), or when an
expected case did not run. Cases that improved are listed so the expected file can be
updated (with --update) in the same change as the fix.
"""
import json
import sys

RANK = {
    "OK": 0,
    "INFORMATIONAL": 0,
    "NON-STRICT": 1,
    "UNIMPLEMENTED": 2,
    "WRONG CODE": 2,
    "UNCLEAN": 2,
    "FAILED": 3,
}


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def load_report(path):
    with open(path) as handle:
        agents = json.load(handle)
    if len(agents) != 1:
        sys.exit(f"expected one agent in {path}, found {len(agents)}")
    (cases,) = agents.values()
    return {
        case: {"behavior": result["behavior"], "behaviorClose": result["behaviorClose"]}
        for case, result in cases.items()
    }


def dump(document):
    """The expected file with one line per case, so that diffs show exactly what changed."""
    lines = ["{"]
    for key, value in document.items():
        if key != "cases":
            lines.append(f" {json.dumps(key)}: {json.dumps(value, indent=1)},")
    cases = document.get("cases", {})
    lines.append(' "cases": {')
    for position, (case, result) in enumerate(cases.items()):
        comma = "," if position + 1 < len(cases) else ""
        lines.append(f"  {json.dumps(case)}: {json.dumps(result)}{comma}")
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] != "--update"):
        sys.exit(__doc__)
    expected_path, report_path = sys.argv[1], sys.argv[2]
    actual = load_report(report_path)
    if len(sys.argv) == 4:
        with open(expected_path) as handle:
            document = json.load(handle)
        document["cases"] = {case: actual[case] for case in sorted(actual, key=case_key)}
        with open(expected_path, "w") as handle:
            handle.write(dump(document))
        print(f"updated {expected_path} with {len(actual)} cases")
        return
    with open(expected_path) as handle:
        expected = json.load(handle)["cases"]
    regressions, improvements = [], []
    for case in sorted(expected, key=case_key):
        want = expected[case]
        got = actual.get(case)
        if got is None:
            regressions.append(f"{case}: did not run")
            continue
        for field in ("behavior", "behaviorClose"):
            if RANK.get(got[field], 3) > RANK.get(want[field], 3):
                regressions.append(f"{case}: {field} {want[field]} -> {got[field]}")
            elif RANK.get(got[field], 3) < RANK.get(want[field], 3):
                improvements.append(f"{case}: {field} {want[field]} -> {got[field]}")
    tally = {}
    for result in actual.values():
        tally[result["behavior"]] = tally.get(result["behavior"], 0) + 1
    summary = ", ".join(f"{count} {name}" for name, count in sorted(tally.items()))
    for line in improvements:
        print(f"improved (run compare.py --update to record it): {line}")
    for line in regressions:
        print(f"REGRESSION: {line}")
    if regressions:
        print(f"# fail autobahn: {len(regressions)} regressions over {len(expected)} expected cases ({summary})")
        sys.exit(1)
    print(f"# pass autobahn: {len(actual)} cases, none worse than expected ({summary})")


if __name__ == "__main__":
    main()
