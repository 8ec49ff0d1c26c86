"""lm-evaluation-harness model interface over a gopher_jax checkpoint (needs the `eval` extra).

    import lm_eval
    from gopher_jax.eval.lm_eval_adapter import GopherJaxLM
    lm = GopherJaxLM.from_workdir("RUN")
    lm_eval.simple_evaluate(model=lm, tasks=["lambada_openai"])

or from lm-eval's own command line with the model registered (lm-eval 0.4 reads no plugin entry
points, so the `eval` extra's console script does the registering; see lm_eval_cli.py):
`gopher-jax-lm-eval --model gopher_jax --model_args workdir=RUN --tasks ...`.
Scoring goes through our TextLM, so lm-eval's tasks and ours tokenise and score identically.
"""
from __future__ import annotations

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from gopher_jax.eval.text_lm import TextLM


@register_model("gopher_jax")
class GopherJaxLM(LM):
    """lm-eval's LM: loglikelihood, loglikelihood_rolling and generate_until on a gopher_jax model."""

    def __init__(self, text_lm: TextLM | None = None, config=None, params=None, workdir: str = "",
                 step: int | None = None, batch_size: int = 16, max_gen_toks: int = 64, mesh: str = "data", **_):
        super().__init__()
        if text_lm is None:
            if not workdir:
                raise ValueError("GopherJaxLM needs a TextLM or workdir=RUN (a gopher-jax training run)")
            text_lm, config, params = self._load(workdir, step, int(batch_size), mesh)
        self.text_lm, self.config, self.params = text_lm, config, params
        self.max_gen_toks = int(max_gen_toks)

    @staticmethod
    def _load(workdir, step, batch_size, mesh="data"):
        from gopher_jax.eval import checkpoint_loader
        from gopher_jax.eval.scorer import Scorer

        loaded = checkpoint_loader.load(workdir, None if step in (None, "") else int(step), mesh=mesh)
        scorer = Scorer.for_loaded(loaded, batch_size=batch_size)
        return TextLM(scorer, loaded.tokenizer), loaded.config, loaded.params

    @classmethod
    def from_workdir(cls, workdir: str, step: int | None = None, batch_size: int = 16,
                     mesh: str = "data") -> "GopherJaxLM":
        """Returns the adapter over the checkpoint of a training run (`mesh`: see `gopher-jax eval --mesh`)."""
        return cls(workdir=workdir, step=step, batch_size=batch_size, mesh=mesh)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "GopherJaxLM":
        """lm_eval --model_args 'workdir=RUN,step=200,batch_size=16,mesh=data' (mesh sizes use ';': 'data=2;fsdp=4')."""
        return cls.create_from_arg_obj(dict(kv.split("=", 1) for kv in arg_string.split(",") if kv),
                                       additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "GopherJaxLM":
        """What lm-eval's CLI calls with the parsed --model_args; batch_size in model_args wins over
        lm-eval's --batch_size (default 1), and 'auto' means ours (16)."""
        kwargs = {k: v for k, v in arg_dict.items()}
        if "mesh" in kwargs:
            kwargs["mesh"] = str(kwargs["mesh"]).replace(";", ",")
        outer = (additional_config or {}).get("batch_size")
        if "batch_size" not in kwargs and outer and not str(outer).startswith("auto"):
            kwargs["batch_size"] = int(outer)
        if str(kwargs.get("batch_size", "")).startswith("auto"):
            kwargs.pop("batch_size")
        return cls(**kwargs)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Returns (log P(continuation | context), greedy) for each Instance with args (context, continuation)."""
        return self.text_lm.loglikelihood([r.args for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Returns the whole-text log-likelihood of each Instance with args (text,), disjoint windows."""
        return self.text_lm.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Returns a completion per Instance with args (context, gen_kwargs): greedy unless do_sample,
        cut at any of gen_kwargs['until'], at most max_gen_toks tokens."""
        from gopher_jax import decode

        if self.config is None:
            raise ValueError("generate_until needs the model: build GopherJaxLM with config and params")
        out = []
        for r in requests:
            context, kw = r.args
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kw.get("temperature", 0.0)) if kw.get("do_sample") else 0.0
            sampling = decode.SamplingConfig(max_new_tokens=int(kw.get("max_gen_toks", self.max_gen_toks)),
                                             temperature=temperature, top_p=float(kw.get("top_p") or 1.0),
                                             top_k=int(kw.get("top_k") or 0))
            out.append(decode.generate(self.config, self.params, self.text_lm.tokenizer, [context], sampling,
                                       stop=until)[0])
        return out
