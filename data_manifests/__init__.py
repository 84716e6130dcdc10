"""Dataset and checkpoint manifests (YAML): URLs, sizes, checksums, class lists; installed as mixreorg.data_manifests."""
