"""Writes tests/reference/tfds_mini: TFDS `mnist` 3.0.1 cut to its first 6 training and 2 test examples, as TFDS
prepared it (array_record shards of TFDS's serialized records, dataset_info.json with the new shard lengths).

Made once from the prepared MNIST of ../shared/tfds (`python tests/reference/tfds_mini/make_fixture.py ../shared/tfds`):
the records are copied byte for byte, so the fixture reads as real TFDS data without TensorFlow, which TFDS needs
to write images. Used by tests/test_prepared_gcs.py (a TFDS data_dir on an object store).
"""
import json
import pathlib
import sys

from array_record.python import array_record_module

COUNTS = {"train": 6, "test": 2}


def main(tfds_dir):
  src = pathlib.Path(tfds_dir) / "mnist" / "3.0.1"
  dst = pathlib.Path(__file__).parent / "mnist" / "3.0.1"
  dst.mkdir(parents=True, exist_ok=True)
  info = json.loads((src / "dataset_info.json").read_text())
  for split in info["splits"]:
    name, n = split["name"], COUNTS[split["name"]]
    shard = f"mnist-{name}.array_record-00000-of-00001"
    reader = array_record_module.ArrayRecordReader(str(src / shard))
    records = reader.read(list(range(n)))
    reader.close()
    writer = array_record_module.ArrayRecordWriter(str(dst / shard), "group_size:1,pad_to_block_boundary:false")
    for record in records:
      writer.write(record)
    writer.close()
    split["shardLengths"], split["numBytes"] = [str(n)], str(sum(len(r) for r in records))
  (dst / "dataset_info.json").write_text(json.dumps(info, indent=1))
  (dst / "features.json").write_bytes((src / "features.json").read_bytes())


if __name__ == "__main__":
  main(sys.argv[1])
