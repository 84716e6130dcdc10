"""Image-mask pairs (class-agnostic masks, no captions): SA-1B's record format, readers for SA-1B and COCO, and the
webdataset shards Unpair-Seg's first stage trains on."""
