"""One base model per ranking: each candidate's adapter is merged into a shared base classifier
for its forward pass and taken out again (:class:`SharedBase`), with a fresh build as the fallback
(:class:`CandidateModels`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer

from ..errors import describe_error
from ..models.build import base_classifier
from ..models.saving import can_merge, load_for_inference
from ..pool import AdapterRecord
from ..task_kinds import get_kind

logger = logging.getLogger(__name__)  # a child of "adapterpool": configure that one


# -- one base model per ranking -------------------------------------------------------------------
class SharedBase:
    """A base classifier built once; each candidate's adapter is merged into it, then taken out.

    PEFT merges LoRA (and the like) into the weights of the layers it targets and puts each
    ``modules_to_save`` copy (the source head, the pooler) in place of the original module. Both
    are undone by :meth:`detach`: the touched weights are copied back from a snapshot of each,
    taken the first time an adapter targets it (exact, unlike subtracting the update again), and
    every original module is put back. A head for a different number of labels is swapped in
    before PEFT copies it, so heads of any size share the base. Whatever :meth:`detach` cannot put
    back raises: then drop the instance.
    """

    def __init__(
        self, base_model: str | None, label_names: list[str], device: torch.device,
        kind: str = "single",
    ) -> None:
        self.model = base_classifier(base_model, label_names, kind).to(device).eval()
        self.labelled = get_kind(kind).labelled
        self.device = device
        self._modules = dict(self.model.named_modules())
        self._attributes = set(vars(self.model))
        self._params = dict(self.model.named_parameters())
        self._pristine: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
        self._touched: list[int] = []  # ids of the parameters the attached adapter merged into
        self._templates: dict[int, torch.nn.Module] = {}  # label count -> the class on meta

    def attach(self, n_labels: int, adapter_dir: str | Path) -> torch.nn.Module:
        """The base with the adapter at ``adapter_dir`` merged in: a plain fast classifier; an
        adapter peft cannot merge (:func:`~adapterpool.models.saving.can_merge`) runs unmerged on
        the shared base, which :meth:`detach` puts back all the same (its modules, untouched
        weights)."""
        self.detach()
        self._fit_head(n_labels)
        model = PeftModel.from_pretrained(self.model, str(adapter_dir))
        if model.peft_config[model.active_adapter].is_prompt_learning:
            raise TypeError("prompt-learning adapters wrap the model; built fresh instead")
        if not can_merge(model):
            return model.eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, BaseTunerLayer):
                    for param in module.get_base_layer().parameters(recurse=False):
                        if id(param) not in self._pristine:
                            self._pristine[id(param)] = (param, param.detach().clone())
                        self._touched.append(id(param))
        merged = model.merge_and_unload()
        if merged is not self.model:
            raise TypeError(f"merging gave a new {type(merged).__name__}, not the shared base")
        return merged.eval()

    def detach(self) -> None:
        """Put the base back as built: weights, modules and attributes (idempotent)."""
        with torch.no_grad():
            for key in self._touched:
                param, value = self._pristine[key]
                param.copy_(value)
        self._touched = []
        for name, module in self._modules.items():
            if name:
                parent, _, child = name.rpartition(".")
                if self._modules[parent]._modules.get(child) is not module:
                    setattr(self._modules[parent], child, module)
        for key in set(vars(self.model)) - self._attributes:
            delattr(self.model, key)
        now = dict(self.model.named_modules())
        if now.keys() != self._modules.keys() or any(m is not self._modules[k]
                                                     for k, m in now.items()):
            raise RuntimeError("the shared base could not be put back after a candidate")

    def _fit_head(self, n_labels: int) -> None:
        """Swap in freshly initialised head modules for ``n_labels`` where the shapes differ.

        The architecture's own class, built on the meta device for that many labels, says which
        parameters depend on the label count and gives modules of the right shape; the adapter's
        ``modules_to_save`` then overwrite them as they would on a freshly built model.
        """
        if not self.labelled or n_labels == self.model.config.num_labels:
            return
        if n_labels not in self._templates:  # building even on meta costs a whole model's init
            config = copy.deepcopy(self.model.config)
            config.num_labels = n_labels
            with torch.device("meta"):
                self._templates[n_labels] = type(self.model)(config)
        template = self._templates[n_labels]
        changed = sorted({
            name.rpartition(".")[0] for name, param in template.named_parameters()
            if name not in self._params or param.shape != self._params[name].shape
        })
        std = getattr(self.model.config, "initializer_range", 0.02)
        dtype = next(iter(self._params.values())).dtype
        for path in changed:
            # a copy: to_empty materialises in place, and the template serves the next candidate
            module = copy.deepcopy(template.get_submodule(path))
            module = module.to_empty(device=self.device).to(dtype)
            with torch.no_grad():
                for param in module.parameters():
                    if param.ndim > 1:
                        torch.nn.init.normal_(param, std=std)
                    else:
                        param.zero_()
            parent, _, child = path.rpartition(".")
            setattr(self.model.get_submodule(parent), child, module)


class CandidateModels:
    """Each candidate's model: merged into a :class:`SharedBase` when ``reuse_base`` (built on
    first use, rebuilt after anything it could not put back), else built fresh; a candidate the
    shared base cannot take is built fresh instead, so the shared path never loses a candidate.
    """

    def __init__(self, base_model: str | None, device: torch.device, *, reuse_base: bool,
                 kind: str = "single") -> None:
        self.base_model, self.device, self.reuse_base = base_model, device, reuse_base
        self.kind = kind
        self.shared: SharedBase | None = None

    def open(
        self, record: AdapterRecord, adapter_dir: Path
    ) -> tuple[torch.nn.Module, Callable[[], None]]:
        """The candidate's model and what to call once done with it."""
        if self.reuse_base:
            try:
                if self.shared is None:
                    self.shared = SharedBase(self.base_model, record.label_names, self.device,
                                             self.kind)
                return self.shared.attach(len(record.label_names), adapter_dir), self._release
            except Exception as exc:  # the fresh build below is the fallback
                logger.debug("adapter %s: shared base not usable (%s); building it fresh",
                             record.id, describe_error(exc))
                self._release()
        model = load_for_inference(self.base_model, record.label_names, adapter_dir, self.kind)
        return model.to(self.device), lambda: None

    def _release(self) -> None:
        if self.shared is None:
            return
        try:
            self.shared.detach()
        except Exception as exc:  # a new base is built for the next candidate
            logger.warning("shared base model dropped, rebuilding it: %s", describe_error(exc))
            self.shared = None
