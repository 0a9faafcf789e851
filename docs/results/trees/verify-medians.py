# Median verification step time per entry, from the --reports-out file of real-0.md's run (every round's verify_ms).
# python3 docs/results/trees/verify-medians.py > docs/results/trees/verify-medians.txt
import json, os, statistics
here = os.path.dirname(os.path.abspath(__file__))
steps = {}
for line in open(os.path.join(here, 'real-0-reports.jsonl')):
    record = json.loads(line)
    steps.setdefault(record['entry'], []).extend(r['verify_ms'] for r in record['report']['per_round'])
for entry, values in steps.items():
    print(f"{entry}: {len(values)} rounds, median verify {statistics.median(values):.3f} ms")
