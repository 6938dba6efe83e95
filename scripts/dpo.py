"""DPO training script: `python scripts/dpo.py ...`, `accelerate launch scripts/dpo.py ...` or `prefkit dpo ...`.

    accelerate launch --config_file scripts/accelerate_configs/deepspeed_zero2.yaml scripts/dpo.py \
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \
        --output_dir qwen-dpo --quantization 4bit --learning_rate 5e-6 --per_device_train_batch_size 4
"""

from prefkit.commands.dpo import main

if __name__ == "__main__":
    raise SystemExit(main())
