"""The SGLang worker plugin: predicted-reuse eviction, hint side table, control channel, queue order.

Entry point ``saga_sgl.worker.plugin:register`` (group ``sglang.srt.plugins``). Importing this
package does not import sglang: every sglang import happens inside functions, after
``compat.check()``. The plugin never decides anything itself: it turns radix nodes and hints into
``saga_sgl.policy`` views, asks the core policy for a key, and applies it.
"""
