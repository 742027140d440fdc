"""LAS-AT (Jia et al., CVPR 2022), LAS-PGD-AT: a strategy network picks each sample's attack (eps, steps,
step size) and is trained by REINFORCE (docs/methods.md §7; jiaxiaojunQAQ/LAS-AT
LAS_PGD_AT/LAS_AT_train_cifar10.py and StrategyNet.py).

Every training step: the strategy network (eval mode) samples per-sample (eps_i, K_i, alpha_i) from its
categorical heads; x' = the masked batch attack below on the target model (eval mode); the target trains
on label-smoothed CE (factor f: f on the true class, (1 - f)/(C - 1) elsewhere).
Every `interval`-th step, before that: sample strategies with the strategy network in train mode,
attack, and reward the batch with
    R = a * clamp(CE(f(x'), y), 0, 10) + b * 4 * acc_rob(f+) + c * 2 * acc_clean(f+),
f+ a copy of the target after one SGD step (current lr, momentum and weight decay of the training
optimiser, fresh momentum) on (x', y) with label-smoothed CE; acc_rob under PGD (reward_steps steps,
2 restarts, each sample updated only while it is still classified correctly) run on f+ in train mode
as the official code does, then acc_rob and acc_clean in eval mode. Policy loss: sum over the four heads
of mean_i(-log pi(a_i) * R); SGD(policy_lr), gradient norm clipped to `clip`.

The batch attack (official Attack_policy_batch): start x + U(-eps_train, eps_train), clamped to [0,1]
only (not to the sample's own ball), then max(K choices) iterations over the whole batch; sample i
moves by alpha_i * sign(grad) only while k < K_i, and every iterate is clamped to its own eps_i ball
and [0,1]. The loop runs to the largest K choice rather than the batch's largest K_i, which would need
a host read-back each step; with the official 12 choices and 128 samples the two agree except with
probability (11/12)^128 ~ 1e-5, and where a trained policy avoids the largest K the extra iterations
move nothing (only their cost differs).

Units: the eps and step choices are integers times `unit` (default eps_train / 8: 1/255 at the official
8/255, so the official {3..15} and {1..5} map to the same fractions of eps on any dataset); the start
radius and the reward PGD use the training eps and step (official 8/255 and 2/255).

The reward PGD stops a restart once no sample is classified correctly, as the official one does
(reward_early_stop=True, the default; it reads a flag back to the host every iteration); False runs
the remaining iterations, which move nothing but the look-ahead copy's BatchNorm statistics.
Deviations, stated: the official policy LR scheduler never decays (its milestones count training steps, it
steps every `interval`): a constant lr here. The official strategy trunk reads raw pixels (its mean 0,
std 1): so does this one. Under DDP each rank computes the reward on its own batch with its own
look-ahead copy; the policy gradients are averaged over ranks and rank 0's strategy BatchNorm
statistics are broadcast, so the strategy network stays the same on every rank.

RobustLT does not compose: the strategy network picks eps (config refuses robustlt=True).
State (strategy network, its optimiser, the step counter) goes into last.pt through state_dict().
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import bn_eval
from ..collectives import all_mean, broadcast_buffers
from ..errors import REGISTRIES, bad, check_choice  # REGISTRIES: data.DATASETS (methods sit below data)
from ..method_spec import MethodArgs, arg_error, register
from ..models import MODELS
from .awp import unwrap
from .base import Attack, Objective, StepOut

__all__ = ["HEADS", "LASAT", "LASATArgs", "REWARD_RESTARTS", "REWARD_SCALES", "StrategyNet", "categorical",
           "policy_loss", "reward", "reward_pgd", "smoothed_ce", "strategy_attack"]

REWARD_RESTARTS = 2            # official attack_pgd(..., 10, 2)
REWARD_SCALES = (4.0, 2.0)     # official R2_param, R3_param
HEADS = ("attack", "eps", "iters", "step")   # official output order; one attack type (IFGSM)


def smoothed_ce(logits: Tensor, y: Tensor, factor: float) -> Tensor:
    """Official LabelSmoothLoss with _label_smoothing: target f on y, (1 - f) / (C - 1) elsewhere."""
    logp = F.log_softmax(logits, 1)
    true = logp.gather(1, y[:, None]).squeeze(1)
    other = (1 - factor) / (logits.shape[1] - 1)
    return -(factor * true + other * (logp.sum(1) - true)).mean()


def reward(ce: Tensor, rob_acc: Tensor, clean_acc: Tensor, weights=(1.0, 1.0, 1.0)) -> Tensor:
    """Official Get_reward: a * clamp(CE, 0, 10) + b * clamp(4 * rob_acc) + c * clamp(2 * clean_acc), clamps +-10."""
    a, b, c = weights
    return (a * ce.clamp(0, 10) + b * (REWARD_SCALES[0] * rob_acc).clamp(-10, 10)
            + c * (REWARD_SCALES[1] * clean_acc).clamp(-10, 10))


def policy_loss(log_probs: list[Tensor], actions: list[Tensor], r: Tensor) -> Tensor:
    """sum over heads of mean_i(-log pi_h(a_ih) * R): REINFORCE with one reward per batch, no baseline."""
    total = r.new_zeros(())   # summed head by head, in order, as sum() would
    for lp, a in zip(log_probs, actions):
        total = total + (-lp.gather(1, a[:, None]).squeeze(1) * r).mean()
    return total


def categorical(probs: Tensor) -> Tensor:
    """One draw per row, exactly torch.multinomial(probs, 1) (Categorical.sample): its n_sample=1 path,
    without the validity check that reads a value back to the host."""
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(1)


def _box(delta: Tensor, lo, hi) -> Tensor:
    """Official clamp(X, lower, upper) = max(min(X, upper), lower); bounds are floats or tensors."""
    return delta.clamp(lo, hi)


def strategy_attack(model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, step: Tensor, iters: Tensor,
                    start: float, max_iters: int) -> Tensor:
    """The official per-sample batch attack (Attack_policy_batch), model in eval mode; eps, step [B] floats
    and iters [B] ints. Returns x' (detached)."""
    x = x.detach()
    eps, step = eps.to(x.dtype).view(-1, 1, 1, 1), step.to(x.dtype).view(-1, 1, 1, 1)
    delta = _box((2 * torch.rand_like(x) - 1) * start, -x, 1 - x)
    with bn_eval(model), torch.enable_grad():
        for k in range(max_iters):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
            active = (iters > k).to(x.dtype).view(-1, 1, 1, 1)
            delta = _box(_box(delta.detach() + active * step * grad.sign(), -eps, eps), -x, 1 - x)
    return (x + delta).detach()


def reward_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int,
               restarts: int = REWARD_RESTARTS, early_stop: bool = True) -> Tensor:
    """Official attack_pgd (L240-266), in the model's current mode (the look-ahead copy: train mode): per
    restart a U(-eps, eps) start clamped to [0,1]; a sample moves only while classified correctly; keep each
    sample's highest-loss restart. Returns delta. early_stop (official): a restart stops at the first forward
    that finds no sample classified correctly, one host read-back per iteration; without it the remaining
    iterations run, moving nothing but the train-mode copy's BatchNorm statistics."""
    x = x.detach()
    best_loss, best = torch.zeros(len(x), device=x.device), torch.zeros_like(x)
    with torch.enable_grad():
        for _ in range(restarts):
            delta = _box((2 * torch.rand_like(x) - 1) * eps, -x, 1 - x)
            for _ in range(steps):
                delta.requires_grad_(True)
                out = model(x + delta)
                correct = out.argmax(1) == y
                if early_stop and not bool(correct.any()):
                    break
                (grad,) = torch.autograd.grad(F.cross_entropy(out, y), delta)
                moved = _box(_box(delta.detach() + step * grad.sign(), -eps, eps), -x, 1 - x)
                delta = torch.where(correct.view(-1, 1, 1, 1), moved, delta.detach())
            delta = delta.detach()
            with torch.no_grad():
                loss = F.cross_entropy(model(x + delta), y, reduction="none")
            take = loss >= best_loss
            best = torch.where(take.view(-1, 1, 1, 1), delta, best)
            best_loss = torch.max(best_loss, loss)
    return best


def _drop_classifier(net: nn.Module) -> int:
    """Replace the net's last nn.Linear by Identity (the trunk's features come out); returns its in_features."""
    name, last = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return last.in_features


class StrategyNet(nn.Module):
    """A models-registry trunk (official: ResNet-18) on raw pixels, then four linear heads: attack type,
    eps, iterations, step size (StrategyNet.py ResNet_Strategy)."""

    def __init__(self, trunk: str, in_channels: int, n_choices: tuple[int, int, int, int]):
        super().__init__()
        self.trunk = MODELS[trunk](1, in_channels)
        width = _drop_classifier(self.trunk)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in n_choices)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.trunk(x)
        return [head(h) for head in self.heads]


class LASAT(Objective):
    attack: Attack   # its radius bounds the strategies
    name = "las_at"
    picks_eps = True   # robustlt() refuses it

    def __init__(self, attack, num_classes, *, policy: StrategyNet, eps_choices: list[float],
                 step_choices: list[float], iter_choices: list[int], interval: int, policy_lr: float, clip: float,
                 smoothing: float, reward_weights: list[float], reward_steps: int, reward_early_stop: bool = True):
        super().__init__(attack, num_classes)
        self.policy = policy
        self.policy_opt = torch.optim.SGD(policy.parameters(), lr=policy_lr)   # official SGD_without_momentum
        self.values = [torch.zeros(1), torch.tensor(eps_choices), torch.tensor(iter_choices),
                       torch.tensor(step_choices)]   # per head: action index -> value (attack type: one choice)
        self.max_iters = max(iter_choices)
        self.interval, self.clip, self.smoothing = interval, clip, smoothing
        self.reward_weights, self.reward_steps = tuple(reward_weights), reward_steps
        self.reward_early_stop = reward_early_stop
        self.steps = 0                     # training steps taken (official curr_step)
        self.optimizer: torch.optim.Optimizer | None = None

    # ---------------------------------------------------------------- interface
    def bind(self, optimizer):
        self.optimizer = optimizer

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "policy_opt": self.policy_opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.policy.load_state_dict(state["policy"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.steps = int(state["steps"])

    def describe(self):
        d = super().describe()
        # the strategy picks eps, step and steps per sample; eps and step here are the start radius and the
        # reward PGD's
        d["attack"] = {**d["attack"], "steps": None, "start": "uniform"}
        return {**d, "las_at": {"eps_choices": self.values[1].tolist(), "iter_choices": self.values[2].tolist(),
                                "step_choices": self.values[3].tolist(), "interval": self.interval}}

    # ---------------------------------------------------------------- the step
    def _to(self, device):
        if self.values[1].device != device:
            self.policy.to(device)   # in place: the policy optimiser keeps its parameters
            self.values = [v.to(device) for v in self.values]

    def sample(self, x: Tensor, train: bool) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(log-probs per head, actions per head, [eps, iters, step] per sample); the policy in train mode
        (with graph) for the REINFORCE update, in eval mode without one for the training attack."""
        self.policy.train(train)
        with torch.set_grad_enabled(train):
            log_probs = [F.log_softmax(z.float(), 1) for z in self.policy(x)]
        actions = [categorical(lp.detach().exp()) for lp in log_probs]
        eps, iters, step = (self.values[h][actions[h]] for h in (1, 2, 3))
        return log_probs, actions, [eps, iters, step]

    def attack_with(self, model, x, y, strategy) -> Tensor:
        eps, iters, step = strategy
        return strategy_attack(model, x, y, eps, step, iters, start=self.attack.eps, max_iters=self.max_iters)

    def update_policy(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One REINFORCE step of the strategy network on this batch (official train(), policy branch)."""
        if self.optimizer is None:
            raise RuntimeError("LAS-AT's look-ahead steps with the training optimiser's lr: bind(optimizer) first "
                               "(fit() does).")
        log_probs, actions, strategy = self.sample(x, train=True)
        x_adv = self.attack_with(model, x, y, strategy)
        with torch.no_grad(), bn_eval(model):
            ce = F.cross_entropy(model(x_adv), y)
        ahead = copy.deepcopy(unwrap(model)).train()   # deepcopy leaves the target's .grad behind
        group = self.optimizer.param_groups[0]
        opt = torch.optim.SGD(ahead.parameters(), lr=group["lr"], momentum=group["momentum"],
                              weight_decay=group["weight_decay"])
        smoothed_ce(ahead(x_adv), y, self.smoothing).backward()
        opt.step()
        delta = reward_pgd(ahead, x, y, self.attack.eps, self.attack.step, self.reward_steps,
                           early_stop=self.reward_early_stop)
        ahead.eval()
        with torch.no_grad():
            rob = (ahead(x + delta).argmax(1) == y).float().mean()
            clean = (ahead(x).argmax(1) == y).float().mean()
        r = reward(ce, rob, clean, self.reward_weights)
        loss = policy_loss(log_probs, actions, r)
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        all_mean(grads)
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip)
        self.policy_opt.step()
        broadcast_buffers(self.policy)
        return {"reward": r.detach(), "policy_loss": loss.detach()}

    def loss(self, model, x, y, epoch):
        self._to(x.device)
        self.steps += 1
        if self.steps % self.interval == 0:
            self.update_policy(model, x, y)
        _, _, strategy = self.sample(x, train=False)
        x_adv = self.attack_with(model, x, y, strategy)
        logits = model(x_adv)
        return StepOut(smoothed_ce(logits, y, self.smoothing), None, logits)


@dataclass(frozen=True)
class LASATArgs(MethodArgs):
    eps_choices: list[int] = field(default_factory=lambda: list(range(3, 16)))   # in units of `unit`
    step_choices: list[int] = field(default_factory=lambda: list(range(1, 6)))   # in units of `unit`
    iter_choices: list[int] = field(default_factory=lambda: list(range(3, 15)))  # attack steps
    unit: float | None = None      # eps unit (None: eps / 8, i.e. 1/255 at eps 8/255)
    interval: int = 20             # strategy update every N training steps
    policy_lr: float = 1e-4        # strategy SGD lr (no momentum)
    clip: float = 1.0              # strategy gradient-norm clip
    smoothing: float = 0.7         # label-smoothing factor (target on the true class)
    reward: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])   # reward weights a, b, c
    reward_steps: int = 10         # PGD steps of the reward's robustness term (2 restarts)
    reward_early_stop: bool = True  # the reward PGD stops once all are misclassified (official)
    strategy_model: str = "resnet18"   # the strategy network's trunk (a models registry name)

    def __post_init__(self):
        check_choice("method_args.strategy_model", self.strategy_model, MODELS)
        for name in ("interval", "policy_lr", "clip", "reward_steps"):
            if getattr(self, name) <= 0:
                raise arg_error(name, getattr(self, name), "must be > 0.")
        for name in ("eps_choices", "step_choices", "iter_choices"):
            v = getattr(self, name)
            if not v or min(v) < 1:
                raise arg_error(name, v, "must be a non-empty list of integers >= 1 (LAS-AT's strategy picks one per "
                                         "sample; eps and step choices are in units of `unit`).")
        if self.unit is not None and self.unit <= 0:
            raise arg_error("unit", self.unit, "must be > 0, or None for eps / 8.")
        if not 0 < self.smoothing <= 1:
            raise arg_error("smoothing", self.smoothing,
                            "must lie in (0, 1]: the target probability of the true class (official 0.7; "
                            "1 = plain CE).")
        if len(self.reward) != 3:
            raise arg_error("reward", self.reward, "must be the three weights [a, b, c] of the loss, robust-accuracy "
                                                   "and clean-accuracy rewards (official [1, 1, 1]).")

    def check(self, cfg) -> None:
        if cfg.robustlt:
            raise bad("robustlt", cfg.robustlt, "LAS-AT's strategy network picks every sample's eps itself, so "
                      "RobustLT has no eps to set (scaling the picked one would be a new method). Fix: "
                      "robustlt=False with method='las_at'.")


@register("las_at", args=LASATArgs, start=("uniform", True), aliases={f"lasat_{n}": n for n in (
    "eps_choices", "step_choices", "iter_choices", "unit", "interval", "policy_lr", "clip", "smoothing", "reward",
    "reward_steps", "reward_early_stop", "strategy_model")})
def _las_at(args, cfg, counts, attack):
    """LAS-AT (Jia et al.): a strategy network picks each sample's attack and learns it by REINFORCE."""
    unit = args.unit if args.unit is not None else attack.eps / 8
    with torch.random.fork_rng(devices=[]):   # the same initial strategy network on every rank and resume
        torch.manual_seed(cfg.seed)
        policy = StrategyNet(args.strategy_model, REGISTRIES["dataset"][cfg.dataset].in_channels,
                             (1, len(args.eps_choices), len(args.iter_choices), len(args.step_choices)))
    return LASAT(attack, len(counts), policy=policy, eps_choices=[c * unit for c in args.eps_choices],
                 step_choices=[c * unit for c in args.step_choices], iter_choices=args.iter_choices,
                 interval=args.interval, policy_lr=args.policy_lr, clip=args.clip, smoothing=args.smoothing,
                 reward_weights=args.reward, reward_steps=args.reward_steps, reward_early_stop=args.reward_early_stop)
