"""Incremental Zarr storage for :func:`posterior.sample`: write as you go, resume, cache.

Layout: the root group holds the result variables at full size from the start (NaN until
written); group ``state`` holds ``next_step`` per chain, set when a chain's run is finished.
The run's own state (weights, buffers, generators, minibatch order) is the driver's
checkpoint, a file per block of chains beside the store; an interrupted run resumes from it
and re-records the steps after it, so values written past it are rewritten unchanged. Every
writer touches only its own chains' region.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

STATE = "state"


def _xr():
    import xarray as xr

    return xr


class ZarrStore:
    def __init__(self, path: Path, key: str, config: dict, chains: range) -> None:
        self.path, self.key, self.config, self.chains = path, key, config, chains
        self.block = slice(chains.start, chains.stop)
        self.draws_written = 0
        self.steps_written = 0

    def _write(self, ds, group: str | None = None, **region: slice) -> None:
        ds.to_zarr(self.path, group=group, region={"chain": self.block, **region},
                   consolidated=False)

    def create(self, run) -> None:
        """Write the empty store unless it exists (one process does this for all)."""
        if not (self.path / "zarr.json").exists() and not (self.path / ".zgroup").exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise ValueError(f"store={str(self.path)!r}: exists and is not a Zarr store")
            self._create(run)

    @property
    def checkpoint_path(self) -> Path:
        """The driver's checkpoint for this block of chains."""
        name = f"{self.path.name}.chains-{self.chains.start}-{self.chains.stop}.pt"
        return self.path.with_name(name)  # beside the store: Zarr warns of foreign files

    def open(self, run):
        """Load a previous run's records for ``run``'s chains into ``run`` (creating the
        store first if needed). Returns the finished tree when all of them are already done.
        """
        xr = _xr()
        self.create(run)
        root = xr.open_dataset(self.path, engine="zarr", consolidated=False, chunks=None)
        if root.attrs.get("fingerprint") != self.key:
            raise ValueError(
                f"store={str(self.path)!r}: holds a run with a different configuration, model "
                "or data; pass another path or delete it"
            )
        state = xr.open_dataset(self.path, engine="zarr", group=STATE, consolidated=False,
                                chunks=None).isel(chain=self.block)
        if bool((state["next_step"].values >= run.num_steps).all()):
            return self.tree(run)
        if self.checkpoint_path.exists():
            self._load(run, root.isel(chain=self.block))
        return None

    def _create(self, run) -> None:
        xr = _xr()
        ds = run.dataset()
        n = run.config["num_chains"]
        full = {}
        for name, var in ds.data_vars.items():
            if "chain" in var.dims:
                shape = (n, *var.shape[1:])
                fill = -1 if name == "nonfinite_step" else math.nan
                full[name] = (var.dims, np.full(shape, fill, dtype=var.dtype))
            else:
                full[name] = var
        coords = {k: v for k, v in ds.coords.items() if k != "chain"}
        coords["chain"] = np.arange(n)
        attrs = dict(ds.attrs, fingerprint=self.key)
        xr.Dataset(full, coords=coords, attrs=attrs).to_zarr(
            self.path, mode="w", consolidated=False)
        xr.Dataset({"next_step": (("chain",), np.zeros(n, dtype=np.int64))},
                   coords={"chain": np.arange(n)}).to_zarr(
            self.path, group=STATE, mode="a", consolidated=False)
        # init_loss is known now; write it so that a finished chain never lacks it
        self._write(ds[["init_loss"]].drop_vars("chain"))

    def _load(self, run, root) -> None:
        """The records written so far, back into the observer's buffers."""
        dev = run.nonfinite.device
        run.nonfinite = torch.as_tensor(root["nonfinite_step"].values, device=dev).clone()
        for name, t in [("sampling_loss", run.sampling_loss), ("metrics_mala_accept", run.mala),
                        ("sampling_loss_at_init", run.sampling_init),
                        *[(f"loss_{k}", v) for k, v in run.obs_loss.items()],
                        *[(f"metrics_{k}", v) for k, v in run.metrics.items()]]:
            t.copy_(torch.as_tensor(root[name].values, device=dev))

    def flush(self, run, final: bool = False) -> None:
        """Write draws and steps recorded since the last flush; when ``final``, mark the
        chains finished."""
        ds = run.dataset().drop_vars("chain")
        d0, d1 = self.draws_written, _draws_done(run)
        s0, s1 = self.steps_written, run.step
        draw_vars = [k for k, v in ds.data_vars.items() if "draw" in v.dims]
        step_vars = [k for k, v in ds.data_vars.items() if "step" in v.dims]
        if d1 > d0:
            self._write(ds[draw_vars].isel(draw=slice(d0, d1)), draw=slice(d0, d1))
        if s1 > s0:
            self._write(ds[step_vars].isel(step=slice(s0, s1)), step=slice(s0, s1))
        self._write(ds[["nonfinite_step", "metrics_mala_accept"]].drop_vars("mala_draw"))
        if final:
            xr = _xr()
            done = np.full(len(self.chains), run.step, dtype=np.int64)
            self._write(xr.Dataset({"next_step": (("chain",), done)}), group=STATE)
        self.draws_written, self.steps_written = d1, s1

    def tree(self, run, all_chains: bool = False):
        xr = _xr()
        ds = xr.open_dataset(self.path, engine="zarr", consolidated=False, chunks=None)
        if not all_chains and self.block != slice(0, run.config["num_chains"]):
            ds = ds.isel(chain=self.block)
        return xr.DataTree(ds)


def _draws_done(run) -> int:
    c = run.config
    done = run.step - c["num_burnin_steps"]
    if done <= 0:
        return 0
    return min(c["num_draws"], (done - 1) // c["num_steps_bw_draws"] + 1)


def config_of(tree) -> dict:
    """The sampler configuration stored with a result."""
    return json.loads(tree.dataset.attrs["config"])
