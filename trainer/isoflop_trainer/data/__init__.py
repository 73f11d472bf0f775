"""The data of a trial: stores (local or S3) and shards (store), datasets the loop reads
(datasets), and turning images and captions into shards (sources, prepare)."""
