"""Running a saga cluster: SGLang workers with the plugin and the saga router in front of them.

* ``processes``: local child processes (workers, router), each in its own process group, stopped
  together on any failure or signal; no orphans.
* ``report``: the summary of an agent workload run through the router (what a live system knows).
"""
