"""Config/trainer pairs: ``dpo`` (DPO), ``reward`` (Bradley-Terry reward models), ``ppo`` (PPO, REINFORCE, RLOO, GRPO)."""
