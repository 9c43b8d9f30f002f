"""HTML building blocks of the report: page shell, CSS, tables, thumbnail grids.

Everything user-controlled (captions, URLs, reasons, stage names) goes through
:func:`esc`; URLs are shown as text, never as links or resources, so the page loads
nothing from anywhere and a hostile alt-text cannot inject markup.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

CSS = """
:root{--bg:#f5f7fa;--card:#fff;--ink:#1f2933;--muted:#5b6571;--line:#e3e8ee;--accent:#3b6fd4;
--kept:#2f9e6f;--removed:#d64545;--download:#d9822b;--dedup:#8f5fbf;--filter:#d64545}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:linear-gradient(120deg,#1f3b73,#3b6fd4);color:#fff;padding:28px 40px 22px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header .sub{opacity:.85;font-size:13px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}
.stat{background:rgba(255,255,255,.13);border-radius:10px;padding:10px 16px;min-width:120px}
.stat b{display:block;font-size:22px;font-weight:650}
.stat span{font-size:12px;opacity:.85;text-transform:uppercase;letter-spacing:.04em}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:8px 40px;
display:flex;flex-wrap:wrap;gap:4px 16px;font-size:13px}
nav a{color:var(--accent);text-decoration:none}nav a:hover{text-decoration:underline}
main{max-width:1280px;margin:0 auto;padding:20px 40px 60px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 22px;
margin:18px 0;box-shadow:0 1px 2px rgba(16,24,40,.04)}
section h2{margin:0 0 10px;font-size:18px}section h3{margin:18px 0 8px;font-size:15px}
p.note,.absent{color:var(--muted);font-size:13px;margin:4px 0 10px}
.absent{font-style:italic}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f0f3f7;font-weight:600}table.kv th{background:none;color:var(--muted);font-weight:500;
white-space:nowrap}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure.thumb{margin:0;width:172px;background:#fafbfc;border:1px solid var(--line);border-radius:8px;
padding:6px}
figure.thumb img,.noimg{width:160px;height:160px;object-fit:contain;background:#eef1f5;border-radius:4px;
display:block;image-rendering:pixelated}
.noimg{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px;
text-align:center;padding:8px}
figcaption{font-size:12px;margin-top:5px;word-wrap:break-word}
figcaption .meta{display:block;color:var(--muted);font-size:11px;margin-top:2px}
.tag{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;color:#fff;background:var(--muted)}
.tag.kept{background:var(--kept)}.tag.download{background:var(--download)}
.tag.dedup{background:var(--dedup)}.tag.filter{background:var(--filter)}
.group{display:flex;gap:10px;align-items:flex-start;padding:10px 0;border-bottom:1px dashed var(--line);
overflow-x:auto}
.group figure.thumb.keeper{border-color:var(--kept);box-shadow:0 0 0 2px rgba(47,158,111,.25)}
td.cap{max-width:420px}td img{width:96px;height:96px;object-fit:contain;background:#eef1f5;border-radius:4px;
image-rendering:pixelated}
.bar{height:8px;background:var(--accent);border-radius:4px;min-width:1px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px}
"""


def esc(value: Any) -> str:
    """HTML-escape any value (None becomes an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmt_num(v: Any, digits: int = 3) -> str:
    """Integers with thousands separators, floats to ``digits`` significant places."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.{digits}g}"
    return esc(v)


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def section(sid: str, title: str, body: str, note: str | None = None) -> str:
    """A report section; ``id`` is what the navigation (and tests) link to."""
    n = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{n}{body}</section>'


def absent(reason: str) -> str:
    """The body of a section whose input is missing: says why, briefly."""
    return f'<p class="absent">{esc(reason)}</p>'


def table(headers: list[str], rows: Iterable[Sequence[Any]], numeric: set[int] | None = None,
          raw: set[int] | None = None) -> str:
    """An HTML table; columns in ``numeric`` are right-aligned and number-formatted,
    columns in ``raw`` are trusted HTML (already escaped by the caller)."""
    numeric, raw = numeric or set(), raw or set()
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i in raw:
                cells.append(f"<td>{v}</td>")
            elif i in numeric:
                cells.append(f'<td class="num">{fmt_num(v)}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table (no header row)."""
    body = "".join(f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def plot(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


def image_or_placeholder(uri: str | None, alt: str, missing: str = "no image") -> str:
    if uri:
        return f'<img src="{uri}" alt="{esc(alt)}" loading="eager">'
    return f'<div class="noimg">{esc(missing)}</div>'


def truncate(text: Any, n: int = 110) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def thumb(uri: str | None, caption: Any, meta: str = "", *, missing: str = "no image",
          cls: str = "") -> str:
    """One thumbnail card: image (or a placeholder saying why not), caption, meta line."""
    cap = esc(truncate(caption)) if caption not in (None, "") else "<i>(empty caption)</i>"
    m = f'<span class="meta">{meta}</span>' if meta else ""
    return (f'<figure class="thumb {esc(cls)}">{image_or_placeholder(uri, truncate(caption, 60), missing)}'
            f'<figcaption title="{esc(caption)}">{cap}{m}</figcaption></figure>')


def tag(category_stage: str, text: str) -> str:
    return f'<span class="tag {esc(category_stage)}">{esc(text)}</span>'


def page(title: str, header: str, nav: list[tuple[str, str]], sections: list[str], footer: str) -> str:
    """The whole document. No external resources: CSS inline, images as data URIs."""
    links = "".join(f'<a href="#{esc(sid)}">{esc(name)}</a>' for sid, name in nav)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            # Forbid any network fetch: the page must stand alone (and a crafted caption
            # could never make a viewer's browser call out).
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{header}"
            f"<nav>{links}</nav><main>{''.join(sections)}</main><footer>{footer}</footer></body></html>")
