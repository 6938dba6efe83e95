"""Reward model training script: `python scripts/reward.py ...`, `accelerate launch scripts/reward.py ...` or
`prefkit reward ...`.

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/reward.py \
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \
        --output_dir qwen-rm --quantization 4bit --learning_rate 1e-4 --per_device_train_batch_size 8 \
        --eval_strategy steps --eval_steps 200
"""

from prefkit.commands.reward import main

if __name__ == "__main__":
    raise SystemExit(main())
