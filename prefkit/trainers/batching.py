"""How preference pairs are batched: padding-free (packed) prefix-shared pairs, and batches of similar lengths.

Two ways to spend less compute on padding, both for :class:`prefkit.DPOTrainer` and :class:`prefkit.RewardTrainer`:

- ``padding_free=True`` packs every prefix-shared pair of a micro-batch into one row (positions restarting per pair,
  a block-diagonal mask; :mod:`prefkit.prefix_sharing` with ``pack=True``). No token is padding and every number is
  the padded batch's up to float summation order, but attention still runs over the whole packed row with a dense
  mask (SDPA or eager), so its cost grows with the square of the row: on the measured CPU it was not faster
  (docs/speed.md). TRL 1.16's own ``padding_free`` is switched off with a warning; prefkit's needs
  ``prefix_sharing`` (the default).
- ``train_sampling_strategy="group_by_length"`` (transformers' own setting) puts pairs of similar lengths in the
  same micro-batch, so the padded batch has little padding. TRL's tokenized pair columns have no ``input_ids`` for
  transformers' sampler to measure, so with TRL the setting stops with an error; here each pair's length is the
  length of the row the model will run (``prompt | chosen | rejected`` when prefix-shared). This changes which pairs
  train together (random mega-batches of up to 50 optimizer batches, each sorted by length), not what a batch computes.
"""

from __future__ import annotations

from ..chat import _common_prefix_length
from ..prefix_sharing import PrefixSharingSwitch

PADDING_FREE_HELP = (
    "Pack every pair of a micro-batch into one row (prefix-shared, positions restarting per pair, block-diagonal "
    "mask): no compute on padding, the same numbers as the padded batch. Attention runs over the whole packed row "
    "with a dense mask, so it pays off when padding is large and rows are short; needs prefix_sharing. (TRL 1.16 "
    "switches its own padding_free off.)"
)


def prefix_sharing_switch(args) -> PrefixSharingSwitch | None:
    """The switch a trainer installs: ``None`` without ``prefix_sharing``, packed rows with ``padding_free``.

    Raises ValueError for ``padding_free=True`` with ``prefix_sharing=False`` (prefkit packs shared pairs only)."""
    sharing = bool(getattr(args, "prefix_sharing", False))
    packed = bool(getattr(args, "padding_free", False)) and hasattr(args, "prefix_sharing")
    if packed and not sharing:
        raise ValueError(
            "padding_free=True packs prefix-shared pairs, but prefix_sharing is False: set prefix_sharing=True (the "
            "default) to pack, or padding_free=False for TRL's padded batch."
        )
    return PrefixSharingSwitch(pack=packed) if sharing else None


def dpo_row_lengths(dataset, shared: bool) -> list[int]:
    """Tokens of each pair's row in the model: ``prompt + chosen + rejected + 1`` prefix-shared (the last prompt token
    is repeated before the rejected answer), ``prompt + max(chosen, rejected)`` per row in TRL's padded batch."""
    lengths = []
    for prompt, chosen, rejected in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]):
        p, c, r = len(prompt), len(chosen), len(rejected)
        lengths.append(p + c + r + 1 if shared else p + max(c, r))
    return lengths


def reward_row_lengths(dataset, shared: bool) -> list[int]:
    """Tokens of each pair's row: the two sequences minus their common first tokens prefix-shared, else the longer."""
    lengths = []
    for chosen, rejected in zip(dataset["chosen_ids"], dataset["rejected_ids"]):
        if shared:
            lengths.append(len(chosen) + len(rejected) - _common_prefix_length(chosen, rejected))
        else:
            lengths.append(max(len(chosen), len(rejected)))
    return lengths


class LengthGroupedPairsMixin:
    """Makes ``train_sampling_strategy="group_by_length"`` work on tokenized preference pairs (see module doc).

    A trainer using it sets ``_pair_lengths`` to :func:`dpo_row_lengths` or :func:`reward_row_lengths`."""

    _pair_lengths = staticmethod(dpo_row_lengths)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if getattr(self.args, "train_sampling_strategy", None) != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        import datasets

        column = self.args.length_column_name
        if not isinstance(dataset, datasets.Dataset) or column in dataset.column_names or "chosen_ids" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        shared = getattr(self, "_prefix_sharing", None) is not None
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            dataset=dataset,
            lengths=self._pair_lengths(dataset, shared),
        )
