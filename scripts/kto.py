"""KTO training script: `python scripts/kto.py ...`, `accelerate launch scripts/kto.py ...` or `prefkit kto ...`.

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/kto.py \
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name trl-lib/kto-mix-14k \
        --output_dir qwen-kto --quantization 4bit --per_device_train_batch_size 8

See `prefkit kto --help` and docs/kto.md.
"""

from prefkit.commands.kto import main

if __name__ == "__main__":
    raise SystemExit(main())
