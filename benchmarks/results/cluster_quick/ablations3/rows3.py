# ruff: noqa
# Rows of session 3's ablations (exec'd by ablate_seeds.py: S = R.SAGA, rep, ACS, extra).
extra['saga-no_preemption'] = rep(S, label='saga-no_preemption', preemption=False)
extra['saga-adm0.8'] = rep(S, label='saga-adm0.8', admission=ACS(enabled=True, kv_threshold_frac=0.8))
extra['saga-adm2.0'] = rep(S, label='saga-adm2.0', admission=ACS(enabled=True, kv_threshold_frac=2.0))
extra['saga-las5'] = rep(S, label='saga-las5', admission=ACS(enabled=True, park_after_steps=5))
extra['saga-las10'] = rep(S, label='saga-las10', admission=ACS(enabled=True, park_after_steps=10))
extra["saga-las5-h30"] = rep(
    S, label="saga-las5-h30", admission=ACS(enabled=True, park_after_steps=5, park_after_held_s=30.0)
)
extra["saga-las5-h60"] = rep(
    S, label="saga-las5-h60", admission=ACS(enabled=True, park_after_steps=5, park_after_held_s=60.0)
)
LAS = R.ADMISSION_CONTROL  # the new default: least attained service after 60 s held
extra["saga-no_preemption_las"] = rep(S, label="saga-no_preemption_las", preemption=False)
extra["saga-bf0.7_las"] = rep(
    S, label="saga-bf0.7_las", admission=dataclasses.replace(LAS, bound_footprint_frac=0.7)
)
