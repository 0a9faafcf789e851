# Summarises the quick matrices kept beside it (matrix-<mode>-after: γ 2, 4, 8 and adaptive with the weak prior; matrix-<mode>-before: adaptive with the strong prior, run right after). Output: matrix-summary.txt.
import csv,os
for mode in ['speculative','conditional']:
    here=os.path.dirname(os.path.abspath(__file__)); a=f'{here}/matrix-{mode}-after/results.csv'; b=f'{here}/matrix-{mode}-before/results.csv'
    if not os.path.exists(a): continue
    A=list(csv.DictReader(open(a)))
    B=list(csv.DictReader(open(b))) if os.path.exists(b) else []
    links=[]
    for r in A:
        if r['link'] not in links: links.append(r['link'])
    print('==',mode)
    for l in links:
        cells={r['gamma']:float(r['ms_per_token']) for r in A if r['link']==l}
        best=min(v for k,v in cells.items() if k!='adaptive')
        bb=[float(r['ms_per_token']) for r in B if r['link']==l]
        before=f" before-adaptive {bb[0]:.2f} ({bb[0]/best-1:+.1%})" if bb else ''
        print(l, ' '.join(f"{k}:{v:.2f}" for k,v in cells.items()), f"adaptive vs best {cells['adaptive']/best-1:+.1%}", before)
