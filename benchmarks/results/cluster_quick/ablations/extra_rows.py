# ruff: noqa  (rows exec()-ed by ablate.py: rep, S, ACS and extra come from there)
extra['sticky_all_noadm'] = rep(S, label='sticky_all_noadm', placement='sticky_least_loaded', preemption=False, admission=ACS())
extra['sticky_all_noadm_lru16'] = rep(S, label='sticky_all_noadm_lru16', placement='sticky_least_loaded', preemption=False, admission=ACS(), eviction='vllm_prefix', ttl=False, page_size=16)
extra['sticky_bare'] = rep(S, label='sticky_bare', placement='sticky_least_loaded', preemption=False, admission=ACS(), eviction='vllm_prefix', ttl=False, page_size=16, fairness='fcfs', stealing=None)
for thr in (1.5, 2.0, 3.0):
    extra[f'nopre_thr{thr}'] = rep(S, label=f'nopre_thr{thr}', preemption=False, admission=ACS(enabled=True, kv_threshold_frac=thr))
    extra[f'thr{thr}'] = rep(S, label=f'thr{thr}', admission=ACS(enabled=True, kv_threshold_frac=thr))
def srow(label, pl=None, fair=None, adm=None, **kw):
    settings = {}
    if pl: settings['placement'] = pl
    if fair: settings['fairness'] = fair
    return rep(S, label=label, settings=settings, admission=adm or S.admission, **kw)
extra['bw'] = srow('bw', pl={'load_signal': 'bound_work'})
extra['srpt'] = srow('srpt', fair={'within_tenant': 'srpt'})
extra['bw_srpt'] = srow('bw_srpt', pl={'load_signal': 'bound_work'}, fair={'within_tenant': 'srpt'})
for f in (0.5, 0.7):
    extra[f'bf{f}'] = srow(f'bf{f}', adm=ACS(enabled=True, bound_footprint_frac=f))
    extra[f'all{f}'] = srow(f'all{f}', pl={'load_signal': 'bound_work'}, fair={'within_tenant': 'srpt'}, adm=ACS(enabled=True, bound_footprint_frac=f))
# floor0.3 / floor0.5 (runs 6-7) need observed_kv_floor_frac, in commit 576d2f0 only (reverted: it lost).
for fl in ():
    extra[f'floor{fl}'] = srow(f'floor{fl}', adm=ACS(enabled=True, observed_kv_floor_frac=fl))
