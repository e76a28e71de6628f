"""The README's architecture diagram is the app's: drawn from the stacks as built, so it cannot drift."""

from __future__ import annotations

from stacks.diagram import README, current_block, mermaid, readme_block


def test_the_readme_s_diagram_is_the_one_the_app_draws(dev_assembly, dev_config):
    stacks, _ = dev_assembly
    drawn = mermaid(stacks, dev_config)
    # THEN the README holds exactly it (after a change: `python -m stacks.diagram` rewrites it)
    assert current_block(README.read_text()) == readme_block(drawn)
    # AND it shows every stack, every registered use case and every configured downstream with its contract
    for stack in stacks.values():
        assert stack.stack_name in drawn
    for use_case in [*stacks["workflows"].use_cases, *stacks["buffers"].use_cases]:
        assert f"<b>{use_case.name}</b>" in drawn
    for downstream in dev_config.downstreams:
        assert f"{downstream.name}<br/>" in drawn and f"burst {downstream.burst}" in drawn
