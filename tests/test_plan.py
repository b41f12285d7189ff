"""AOT compile of a mid-size train step on a simulated mesh, from abstract shapes."""
from configs import lm
from hh import plan, sharding


def test_aot_compile_197m_on_fsdp_tensor_mesh():
  config = lm.get_config("size=197M")
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  config.lm.data.batch_size, config.lm.data.seq_len = 8, 256
  mesh = sharding.make_mesh(config.mesh)
  result = plan.plan(config, mesh)
  n = result["n_params"]
  # fp32 params split 8 ways (norms replicated: a few KiB), AdamW's two moments twice that
  assert abs(result["params"] - 4 * n / 8) / (4 * n / 8) < 0.01
  assert abs(result["opt_state"] - 8 * n / 8) / (8 * n / 8) < 0.01
  assert result["temporaries"] > 0
  assert result["peak"] >= result["params"] + result["opt_state"]
  assert "fits a 32 GiB device" in plan.format_plan(config, mesh, result, 32.0)
