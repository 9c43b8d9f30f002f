"""Streaming curated datasets into training: exactly-once epochs, elastic resume, subsets, mixing.

```python
from curation.stream import StreamingDataset, StreamingDataLoader

sd = StreamingDataset("s3://bucket/ds", where="keep AND clip_score > 0.3", batch_size=256,
                      columns=["clip_score"], seed=0)
loader = StreamingDataLoader(sd, num_workers=8)
for batch in loader: ...
ckpt["data"] = loader.state_dict()          # rank 0's state resumes any world size
```
"""
from curation.stream.cache import ShardCache
from curation.stream.config import StreamConfig, open_stream
from curation.stream.dataset import StreamingDataset
from curation.stream.decode import CorruptSample, decode_image, identity, pil_to_tensor
from curation.stream.loader import StreamingDataLoader

__all__ = ["StreamingDataset", "StreamingDataLoader", "StreamConfig", "open_stream", "ShardCache", "CorruptSample",
           "decode_image", "identity", "pil_to_tensor"]
