"""The synthetic noisy web corpus (DESIGN.md section 7) and its fault-injecting server.

``generate(out_dir, samples=..., seed=...)`` draws simple scenes with realistic crawl noise and
exact ground truth; ``SynthServer`` serves them on loopback with the faults of the web;
``write_url_list`` repoints the URL list at another server address.
"""
from curation.synth.corpus import SynthError, clean_pairs, generate
from curation.synth.scenes import DEFAULT_SLICES, Scene, caption_bank, class_labels, render_scene
from curation.synth.urls import write_url_list


def __getattr__(name):  # the server pulls in http.server; import it only when asked
    if name == "SynthServer":
        from curation.synth.server import SynthServer

        return SynthServer
    raise AttributeError(name)


__all__ = ["DEFAULT_SLICES", "Scene", "SynthError", "SynthServer", "caption_bank", "class_labels",
           "clean_pairs", "generate", "render_scene", "write_url_list"]
