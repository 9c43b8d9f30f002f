"""Hash-list blocking (SHA-256, MD5, PDQ): known-bad images are never written anywhere.

* :mod:`~curation.blocklist.lists`: list files (one hash a line, or CSV ``hash[,kind]``);
* :mod:`~curation.blocklist.pdq`: PDQ hashes in ThreatExchange's 64-hex form;
* :mod:`~curation.blocklist.screen`: the download-time check (one call in the download worker);
* :mod:`~curation.blocklist.stage`: ``curate block DS --list F`` for lists that arrive later.
"""
from curation.blocklist.lists import BlocklistError, HashList, load_lists
from curation.blocklist.screen import BLOCKED_HASH, screen

__all__ = ["BLOCKED_HASH", "BlocklistError", "HashList", "load_lists", "screen"]
