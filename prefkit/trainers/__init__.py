"""Config/trainer pairs: ``dpo`` (DPO), ``kto`` (KTO, from thumbs up / down on single answers), ``reward``
(Bradley-Terry reward models), ``ppo`` (PPO, REINFORCE, RLOO, GRPO)."""
