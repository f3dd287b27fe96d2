"""`catdog audit --report DIR`: one self-contained `audit.html`, a section per issue with the flagged
pictures as thumbnails, the other picture beside each duplicate, conflict and leak, and ImageNet's
likeliest names under each "neither" and "both". Thumbnails are inlined JPEGs: no request leaves it.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import os
import time
from pathlib import Path

from PIL import Image

from catdog.audit.audit import ISSUES, Result
from catdog.audit.checks import top_names
from catdog.data.images import ImageError, load_image, thumbnail
from catdog.evaluation.report_page import CSS, table

SHOWN = 60  # pictures per issue on the page
THUMB = 200  # longest side of a thumbnail, in pixels
NOTES = {
    "unreadable": "Files that no image decoder could read.",
    "conflict": "The same picture, or nearly, under both labels: one of the two labels is wrong.",
    "label_error": "Pictures whose label the rest of the data contradicts: a model that never saw them (5-fold "
                   "logistic regression on ImageNet features; with --fine-tune, ImageNet's top blocks fine-tuned "
                   "on each fold) is surer of the other class than it usually is of that class (confident learning).",
    "neither": "No cat or dog seen by ImageNet's classifier (118 dog breeds, 5 cats), in the whole picture or "
               "in any of 9 parts of it, or little of one in a picture unlike the rest of the set; the most unusual "
               "pictures of the set first. Its likeliest names are under each picture.",
    "both": "Perhaps a cat and a dog: the fine-tuned classifier calls parts of the picture cat and other parts "
            "dog. A weak check: a part of one black or long-haired animal can look like the other.",
    "leak": "Nearly the same picture in two splits of `catdog prepare`: the copy in validation or test is no "
            "longer a fair test. `near_duplicate_bits=` keeps such pictures in one split.",
    "duplicate": "Copies of another picture under the same label (the first copy is not flagged).",
    "low_quality": "Pixels a person would not call a photo of anything: dark, blank, blurred, or a small "
                   "picture on a large plain border.",
}
EXTRA_CSS = """
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: .8rem; }
.item { background: white; border: 1px solid #ddd; border-radius: 8px; padding: .5rem; font-size: .85rem; }
.item .pics { display: flex; gap: .3rem; align-items: flex-start; }
.item img { width: 100%; height: auto; border-radius: 4px; } .item .pics img { width: 49%; }
.item .pics img:only-child { width: 100%; }
.item b { font-variant-numeric: tabular-nums; } .item .path { color: #0060a0; overflow-wrap: anywhere; }
.item .names { color: #555; }
"""


def _thumb_uri(path: Path) -> str:
    try:
        pixels = thumbnail(load_image(path), THUMB)
    except ImageError:
        return ""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _item(row: dict, result: Result, index_of: dict[str, int]) -> str:
    e = html.escape
    pictures = [row["path"]] + ([row["neighbour"]] if row["neighbour"] else [])
    images = "".join(f'<img src="{uri}" alt="{e(p)}" title="{e(p)}">' if (uri := _thumb_uri(result.root / p))
                     else "<span>(unreadable)</span>" for p in pictures)
    names = ""
    if row["issue"] in ("neither", "both"):  # what it does see, beyond the two names the reason gives
        logits = result.looks.logits[index_of[row["path"]]]
        names = "<div class=names>ImageNet's top 5: " + e(", ".join(f"{n} {p:.0%}" for n, p in top_names(logits, 5))) \
            + "</div>"
    return (f'<div class=item><div class=pics>{images}</div><div class=path>{e(row["path"])}</div>'
            f'<div>labelled <b>{e(row["label"])}</b>{", " + e(row["split"]) if row["split"] else ""}; '
            f'score <b>{row["score"]:.3f}</b></div><div>{e(row["reason"])}</div>{names}</div>')


def render(result: Result, source: str) -> str:
    e = html.escape
    index_of = {path: i for i, path in enumerate(result.paths)}
    by_issue = collections.defaultdict(list)
    for row in result.rows:
        by_issue[row["issue"]].append(row)
    counts = collections.Counter(issue for row in result.rows for issue in row["issues"])
    cards = [("pictures", f"{len(result.paths):,}"), ("flagged", f"{len(result.rows):,}")]
    # A card counts what its section shows (pictures whose strongest issue it is), as the links do;
    # pictures that also have it under a stronger issue are said beside.
    cards += [(issue + (f" (+{counts[issue] - len(by_issue[issue]):,} under another)"
                        if counts[issue] > len(by_issue[issue]) else ""), f"{len(by_issue[issue]):,}")
              for issue in ISSUES if counts[issue]]
    parts = [f"<h1>catdog audit: {e(source)}</h1>",
             f"<p class=sub>{len(result.paths):,} pictures in {e(str(result.root))}; made "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {sum(result.seconds.values()):.0f} s"
             f"{'; label errors from the top blocks fine-tuned on each fold' if 'fine_tune' in result.seconds else ''}"
             "</p>",
             '<div class="cards">' + "".join(f"<div class=card><b>{e(v)}</b><span>{e(k)}</span></div>"
                                             for k, v in cards) + "</div>",
             "<nav>" + " · ".join(f'<a href="#{issue}">{issue} ({len(by_issue[issue])})</a>'
                                  for issue in ISSUES if by_issue[issue]) + "</nav>",
             "<p class=note>Each picture is shown under its strongest issue, most suspicious first; the score is "
             "in 0..1 and the rows of <code>catdog audit</code> are ranked by it.</p>"]
    for issue in ISSUES:
        rows = by_issue[issue]
        if not rows:
            continue
        shown = "".join(_item(row, result, index_of) for row in rows[:SHOWN])
        more = f" (the first {SHOWN} of {len(rows)})" if len(rows) > SHOWN else ""
        parts.append(f'<h2 id="{issue}">{issue}: {len(rows)}{more}</h2><p class=note>{e(NOTES[issue])}</p>'
                     f"<div class=grid>{shown}</div>")
    top = [(i + 1, r["path"], r["label"], r["issue"], r["score"], r["reason"]) for i, r in enumerate(result.rows[:200])]
    parts.append("<h2 id=rows>The first 200 rows</h2>" + table(top, ["#", "path", "label", "issue", "score", "reason"]))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>catdog audit: {e(source)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}{EXTRA_CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_report(result: Result, out: str | os.PathLike, source: str | None = None) -> Path:
    """Writes `out/audit.html`; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "audit.html"
    page.write_text(render(result, source or result.root.name), encoding="utf-8")
    return page
