# Rows of session 3's ablations (exec'd by ablate_seeds.py: S = R.SAGA, rep, ACS, extra).
extra['saga-no_preemption'] = rep(S, label='saga-no_preemption', preemption=False)
extra['saga-adm0.8'] = rep(S, label='saga-adm0.8', admission=ACS(enabled=True, kv_threshold_frac=0.8))
extra['saga-adm2.0'] = rep(S, label='saga-adm2.0', admission=ACS(enabled=True, kv_threshold_frac=2.0))
