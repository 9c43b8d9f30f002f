"""``reshard``: materialise a compact new dataset of the kept samples (a producing stage).

It lives above ``curation.io`` (it is a stage); ``io`` only provides the writer it uses.
"""
