"""MDCH on Wikipedia with the setting its validation sweep chose: lr=40, epochs=1000 (defaults: lr=20, epochs=500).

    python experiments/run.py --config configs/wikipedia/mdch-tuned.py --bits 32 --seeds 5

The sweep (200 training items held out as val, 3 seeds per setting, each setting's last epoch
scored on val, the test queries never looked at; run on a lent H100 GPU with `--jobs 3`, beside
the other methods' sweeps, in about 5 minutes):

    python experiments/sweep.py --method=mdch --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --grid lr=20,40,80 --grid epochs=500,1000 --seeds 3 \
        --eval-every 0 --no-test --out-dir results/sweeps/mdch-wikipedia

    | rank | lr | epochs | val mAP (mean of seeds, both directions) | seeds |
    |---|---|---|---|---|
    | 1 | 40 | 1000 | 0.5252 | 3 |
    | 2 | 20 | 1000 | 0.5062 | 3 |
    | 3 | 40 | 500 | 0.5003 | 3 |
    | 4 | 80 | 1000 | 0.4732 | 3 |
    | 5 | 20 | 500 | 0.4614 | 3 |
    | 6 | 80 | 500 | 0.4574 | 3 |

The sweep chose lr 40 (inside the grid) and 1000 epochs (its edge): more epochs helped at every rate.

Protocol and data: configs/wikipedia/README.md.
"""


def get_config():
  return {"method": "mdch", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia", "set": {"lr": 40, "epochs": 1000}}
