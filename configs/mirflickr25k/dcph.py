"""DCPH on the MIRFlickr-25K tags→labels sanity protocol with its defaults (no overrides).

    python experiments/run.py --config configs/mirflickr25k/dcph.py --bits 32 --seeds 5

Protocol and data: configs/mirflickr25k/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/mirflickr25k --only dcph --bits 16,32,64 --seeds 5
| mirflickr25k | dcph | 16 | 0.6497 ± 0.0080 | 0.6493 ± 0.0066 | 5 | best-val@16 | defaults | 148.96 | NVIDIA H100 80GB HBM3 |
| mirflickr25k | dcph | 32 | 0.6592 ± 0.0057 | 0.6632 ± 0.0046 | 5 | best-val@16 | defaults | 100.52 | NVIDIA H100 80GB HBM3 |
| mirflickr25k | dcph | 64 | 0.6276 ± 0.0091 | 0.6534 ± 0.0071 | 5 | best-val@16 | defaults | 113.26 | NVIDIA H100 80GB HBM3 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "dcph", "dataset": "mirflickr25k", "data_dir": "../shared/data/mirflickr25k",
          "data_options": {"image": "tags"}}
