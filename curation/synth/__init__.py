"""The synthetic noisy web corpus (DESIGN.md section 7) and its fault-injecting server.

``generate(out_dir, samples=2000, seed=0, base_url=..., slices=("2023","2024","2025"))`` writes:

- ``urls.parquet``: ``uid, url, text`` (DataComp-style; ``text`` is the alt-text as crawled).
- ``truth.parquet``: one row per URL, same order: ``uid url path alt_text true_caption
  class_label color shape background count slice noise dup_group dup_kind dup_of_uid
  caption_mismatched expected_status`` plus ``format width height sha256`` of the served image
  (null where the URL never yields one). ``noise`` kinds: mismatched_caption,
  boilerplate_caption, exact_dup, near_dup, http_404, http_500, timeout, not_image, oversized,
  too_many_pixels, noai, robots, redirect, transient, blocked_redirect, tiny, extreme_aspect.
  ``expected_status`` is what a correct downloader reports with retries >= 2, a client timeout
  below the server's stall, robots/X-Robots-Tag honoured and only the server's own address
  allowed (see ``corpus.json``'s ``status_notes``).
- ``seed.parquet`` / ``eval.parquet``: clean 64 px PNG pairs ``image caption class_label slice``
  (seed captions phrased like the crawl's true alt texts, 5 % of seed images stamped and captioned
  "... with a watermark"; eval captions are bare ``caption_bank`` entries).
- ``images/``, ``routes.json`` (what ``SynthServer`` serves) and ``corpus.json`` (rates, counts).

``SynthServer`` serves a corpus on loopback with its faults; ``write_url_list`` repoints the URL
list at another server address; ``caption_bank``/``class_labels``/``render_scene`` expose the
scene vocabulary.
"""
from typing import TYPE_CHECKING

from curation.synth.corpus import SynthError, clean_pairs, generate
from curation.synth.scenes import DEFAULT_SLICES, Scene, caption_bank, class_labels, render_scene
from curation.synth.urls import write_url_list

if TYPE_CHECKING:
    from curation.synth.server import SynthServer


def __getattr__(name):  # the server pulls in http.server; import it only when asked
    if name == "SynthServer":
        from curation.synth.server import SynthServer

        return SynthServer
    raise AttributeError(name)


__all__ = ["DEFAULT_SLICES", "Scene", "SynthError", "SynthServer", "caption_bank", "class_labels",
           "clean_pairs", "generate", "render_scene", "write_url_list"]
