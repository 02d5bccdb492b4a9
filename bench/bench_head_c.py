"""Choose ``index.head_c`` on a training split only (issue 15), never on dev.

The training rows are cut into 5 folds and fold 0 is held out: StyleKQC by blocks of 20
consecutive rows (its paraphrases sit together in the file and it has no set id), ParaKQC
by paraphrase set inside the outer fold 0's training rows (``group % 5 != 0``, held out
``(group // 5) % 5 == 0``), so the figure never sees a row that bench_eval's ParaKQC
cross-validation reports for fold 0. The head is fitted with the indexer's own code
(``HeadData.fit``) on the other folds, with a lexicon counted on them, and scored by its
argmax accuracy on the held-out fold. Dense features (hybrid) are read from the vector
cache ``bench_eval.py --goals`` writes (``--cache``).

    python bench/bench_head_c.py stylekqc|parakqc lexical|hybrid 1,3,10,30 [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qroute.config import LexicalSettings, TableSettings
from qroute.embedding.lexical import LexicalEncoder, Lexicon, morph_from
from qroute.routing.head import HeadData
from qroute.table import read_table

DATA = Path("/work/shared/datasets")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", choices=["stylekqc", "parakqc"])
    parser.add_argument("mode", choices=["lexical", "hybrid"])
    parser.add_argument("values", help="comma-separated head_c values")
    parser.add_argument("--cache", type=Path, default=Path("/work/wt/cache/bench-goals"))
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    rows = read_table(args.data_dir / args.data / "train.jsonl", lenient)
    if args.data == "parakqc":
        rows = [e for e in rows if int(e.extra["group"]) % 5 != 0]
        fold = np.array([(int(e.extra["group"]) // 5) % 5 for e in rows])
    else:
        fold = np.array([(i // 20) % 5 for i in range(len(rows))])
    texts = [e.text for e in rows]
    labels = [e.label for e in rows]
    lexical = LexicalEncoder(LexicalSettings(analyzer="char+morph"))
    terms = [lexical.terms(t) for t in texts]
    train, held = np.flatnonzero(fold != 0), np.flatnonzero(fold == 0)
    lexicon = Lexicon.count(terms[i] for i in train)
    sparse = [lexicon.vector(t) for t in terms]
    dense = None
    if args.mode == "hybrid":
        for path in sorted(args.cache.glob("vectors-*.npz")):
            stored = np.load(path, allow_pickle=False)
            position = {t: i for i, t in enumerate(json.loads(str(stored["texts"])))}
            if texts[0] in position:
                vectors = stored["vectors"]
                dense = np.stack([vectors[position[t]] for t in texts]).astype(np.float32)
                break
        if dense is None:
            raise SystemExit(f"no cached vectors of {args.data} under {args.cache}")
    for c in (float(v) for v in args.values.split(",")):
        started = time.perf_counter()
        data = HeadData()
        data.offer(
            [str(i) for i in train],
            [labels[i] for i in train],
            None if dense is None else dense[train],
            [sparse[i] for i in train],
        )
        head = data.fit(lexicon, c, morph_from=morph_from(lexical.settings))
        scores = head.scores(
            None if dense is None else dense[held], [sparse[i] for i in held], lexicon
        )
        right = np.mean([s[0].label == labels[i] for s, i in zip(scores, held, strict=True)])
        print(
            json.dumps(
                {
                    "data": args.data,
                    "mode": args.mode,
                    "head_c": c,
                    "train_rows": len(train),
                    "held_rows": len(held),
                    "head_accuracy": round(float(right), 4),
                    "fit_seconds": round(time.perf_counter() - started),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
