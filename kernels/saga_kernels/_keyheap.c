/* KeyHeap: an indexed binary min-heap of eviction keys (tier, primary, tiebreak, entry_id).
 *
 * Native half of saga_kernels.KeyHeap; saga_kernels/keyheap_py.py is the pure-Python twin with
 * the same semantics (tests/kernels checks they choose the same victims). Generic on purpose: it
 * orders whatever key tuple a policy returns (int tier, float primary, float tiebreak, int id),
 * compared lexicographically; it computes no policy formula.
 *
 * Layout: `slots` holds one record per live entry (key + its heap position), `heap` holds slot
 * numbers in heap order, `map` is an open-addressing table entry_id -> slot (linear probing,
 * backward-shift deletion, so no tombstones). push of an id already present replaces its key in
 * place (sift up or down): O(log n); remove O(log n); top O(1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    long long tier;
    double primary;
    double tiebreak;
    long long id;
    Py_ssize_t pos; /* index in heap[], or -1 when the slot is free */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t *heap;
    Py_ssize_t size;       /* live entries */
    Py_ssize_t slot_cap;   /* allocated slots */
    Py_ssize_t *free_list; /* free slot numbers (stack) */
    Py_ssize_t free_len;
    Py_ssize_t slot_used;  /* slots ever handed out (high-water mark) */
    /* map: open addressing; keys[i] valid iff vals[i] >= 0 */
    long long *mkeys;
    Py_ssize_t *mvals;
    Py_ssize_t mcap; /* power of two */
} KeyHeap;

static inline uint64_t hash_id(long long id) {
    uint64_t x = (uint64_t)id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline int less(const Slot *a, const Slot *b) {
    if (a->tier != b->tier) return a->tier < b->tier;
    if (a->primary != b->primary) return a->primary < b->primary;
    if (a->tiebreak != b->tiebreak) return a->tiebreak < b->tiebreak;
    return a->id < b->id;
}

static Py_ssize_t map_find(KeyHeap *h, long long id) {
    if (h->mcap == 0) return -1;
    Py_ssize_t mask = h->mcap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_id(id) & (uint64_t)mask);
    while (h->mvals[i] >= 0) {
        if (h->mkeys[i] == id) return h->mvals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

static void map_put_raw(long long *keys, Py_ssize_t *vals, Py_ssize_t cap, long long id, Py_ssize_t v) {
    Py_ssize_t mask = cap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_id(id) & (uint64_t)mask);
    while (vals[i] >= 0) {
        if (keys[i] == id) { vals[i] = v; return; }
        i = (i + 1) & mask;
    }
    keys[i] = id;
    vals[i] = v;
}

static int map_grow(KeyHeap *h) {
    Py_ssize_t cap = h->mcap ? h->mcap * 2 : 64;
    long long *keys = PyMem_Malloc(sizeof(long long) * cap);
    Py_ssize_t *vals = PyMem_Malloc(sizeof(Py_ssize_t) * cap);
    if (!keys || !vals) { PyMem_Free(keys); PyMem_Free(vals); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < cap; i++) vals[i] = -1;
    for (Py_ssize_t i = 0; i < h->mcap; i++)
        if (h->mvals[i] >= 0) map_put_raw(keys, vals, cap, h->mkeys[i], h->mvals[i]);
    PyMem_Free(h->mkeys);
    PyMem_Free(h->mvals);
    h->mkeys = keys;
    h->mvals = vals;
    h->mcap = cap;
    return 0;
}

static void map_del(KeyHeap *h, long long id) {
    Py_ssize_t mask = h->mcap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_id(id) & (uint64_t)mask);
    while (h->mvals[i] >= 0 && h->mkeys[i] != id) i = (i + 1) & mask;
    if (h->mvals[i] < 0) return;
    /* backward-shift deletion keeps every probe chain unbroken */
    Py_ssize_t j = i;
    for (;;) {
        h->mvals[i] = -1;
        for (;;) {
            j = (j + 1) & mask;
            if (h->mvals[j] < 0) return;
            Py_ssize_t home = (Py_ssize_t)(hash_id(h->mkeys[j]) & (uint64_t)mask);
            /* move j back to i unless its home lies cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;
            break;
        }
        h->mkeys[i] = h->mkeys[j];
        h->mvals[i] = h->mvals[j];
        i = j;
    }
}

static inline void heap_set(KeyHeap *h, Py_ssize_t pos, Py_ssize_t slot) {
    h->heap[pos] = slot;
    h->slots[slot].pos = pos;
}

static void sift_up(KeyHeap *h, Py_ssize_t pos) {
    Py_ssize_t slot = h->heap[pos];
    Slot *s = &h->slots[slot];
    while (pos > 0) {
        Py_ssize_t parent = (pos - 1) >> 1;
        Py_ssize_t ps = h->heap[parent];
        if (!less(s, &h->slots[ps])) break;
        heap_set(h, pos, ps);
        pos = parent;
    }
    heap_set(h, pos, slot);
}

static void sift_down(KeyHeap *h, Py_ssize_t pos) {
    Py_ssize_t slot = h->heap[pos];
    Slot *s = &h->slots[slot];
    Py_ssize_t n = h->size;
    for (;;) {
        Py_ssize_t child = 2 * pos + 1;
        if (child >= n) break;
        if (child + 1 < n && less(&h->slots[h->heap[child + 1]], &h->slots[h->heap[child]])) child++;
        if (!less(&h->slots[h->heap[child]], s)) break;
        heap_set(h, pos, h->heap[child]);
        pos = child;
    }
    heap_set(h, pos, slot);
}

static int reserve_slot(KeyHeap *h) {
    if (h->free_len > 0 || h->slot_used < h->slot_cap) return 0;
    Py_ssize_t cap = h->slot_cap ? h->slot_cap * 2 : 64;
    Slot *slots = PyMem_Realloc(h->slots, sizeof(Slot) * cap);
    if (!slots) { PyErr_NoMemory(); return -1; }
    h->slots = slots;
    Py_ssize_t *heap = PyMem_Realloc(h->heap, sizeof(Py_ssize_t) * cap);
    if (!heap) { PyErr_NoMemory(); return -1; }
    h->heap = heap;
    Py_ssize_t *fl = PyMem_Realloc(h->free_list, sizeof(Py_ssize_t) * cap);
    if (!fl) { PyErr_NoMemory(); return -1; }
    h->free_list = fl;
    h->slot_cap = cap;
    return 0;
}

/* Parse a (tier, primary, tiebreak, entry_id) sequence into `out` (id, pos unset). */
static int parse_key(PyObject *key, Slot *out) {
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 4) {
        PyErr_SetString(PyExc_TypeError, "KeyHeap key must be a 4-tuple (tier, primary, tiebreak, entry_id)");
        return -1;
    }
    out->tier = PyLong_AsLongLong(PyTuple_GET_ITEM(key, 0));
    if (out->tier == -1 && PyErr_Occurred()) return -1;
    out->primary = PyFloat_AsDouble(PyTuple_GET_ITEM(key, 1));
    if (out->primary == -1.0 && PyErr_Occurred()) return -1;
    out->tiebreak = PyFloat_AsDouble(PyTuple_GET_ITEM(key, 2));
    if (out->tiebreak == -1.0 && PyErr_Occurred()) return -1;
    out->id = PyLong_AsLongLong(PyTuple_GET_ITEM(key, 3));
    if (out->id == -1 && PyErr_Occurred()) return -1;
    if (isnan(out->primary) || isnan(out->tiebreak)) {
        PyErr_SetString(PyExc_ValueError, "KeyHeap key has NaN in primary or tiebreak (clean the key first)");
        return -1;
    }
    return 0;
}

static void remove_slot(KeyHeap *h, Py_ssize_t slot) {
    Py_ssize_t pos = h->slots[slot].pos;
    map_del(h, h->slots[slot].id);
    h->slots[slot].pos = -1;
    h->free_list[h->free_len++] = slot;
    h->size--;
    if (pos == h->size) return;
    heap_set(h, pos, h->heap[h->size]);
    if (pos > 0 && less(&h->slots[h->heap[pos]], &h->slots[h->heap[(pos - 1) >> 1]]))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}

static PyObject *KeyHeap_push(KeyHeap *h, PyObject *key) {
    Slot parsed;
    if (parse_key(key, &parsed) < 0) return NULL;
    Py_ssize_t slot = map_find(h, parsed.id);
    if (slot >= 0) {
        Slot *s = &h->slots[slot];
        int up = less(&parsed, s);
        s->tier = parsed.tier;
        s->primary = parsed.primary;
        s->tiebreak = parsed.tiebreak;
        if (up) sift_up(h, s->pos); else sift_down(h, s->pos);
        Py_RETURN_NONE;
    }
    if (reserve_slot(h) < 0) return NULL;
    if ((h->size + 1) * 2 > h->mcap && map_grow(h) < 0) return NULL;
    slot = h->free_len > 0 ? h->free_list[--h->free_len] : h->slot_used++;
    parsed.pos = h->size;
    h->slots[slot] = parsed;
    map_put_raw(h->mkeys, h->mvals, h->mcap, parsed.id, slot);
    h->heap[h->size++] = slot;
    sift_up(h, h->size - 1);
    Py_RETURN_NONE;
}

static PyObject *KeyHeap_remove(KeyHeap *h, PyObject *arg) {
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t slot = map_find(h, id);
    if (slot < 0) Py_RETURN_FALSE;
    remove_slot(h, slot);
    Py_RETURN_TRUE;
}

static PyObject *KeyHeap_top(KeyHeap *h, PyObject *Py_UNUSED(ignored)) {
    if (h->size == 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(h->slots[h->heap[0]].id);
}

static PyObject *KeyHeap_pop(KeyHeap *h, PyObject *Py_UNUSED(ignored)) {
    if (h->size == 0) Py_RETURN_NONE;
    Py_ssize_t slot = h->heap[0];
    long long id = h->slots[slot].id;
    remove_slot(h, slot);
    return PyLong_FromLongLong(id);
}

static PyObject *slot_key(const Slot *s) {
    return Py_BuildValue("(LddL)", s->tier, s->primary, s->tiebreak, s->id);
}

static PyObject *KeyHeap_min_key(KeyHeap *h, PyObject *Py_UNUSED(ignored)) {
    if (h->size == 0) Py_RETURN_NONE;
    return slot_key(&h->slots[h->heap[0]]);
}

static PyObject *KeyHeap_key_of(KeyHeap *h, PyObject *arg) {
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t slot = map_find(h, id);
    if (slot < 0) Py_RETURN_NONE;
    return slot_key(&h->slots[slot]);
}

static PyObject *KeyHeap_clear(KeyHeap *h, PyObject *Py_UNUSED(ignored)) {
    h->size = 0;
    h->free_len = 0;
    h->slot_used = 0;
    for (Py_ssize_t i = 0; i < h->mcap; i++) h->mvals[i] = -1;
    Py_RETURN_NONE;
}

static Py_ssize_t KeyHeap_len(KeyHeap *h) { return h->size; }

static int KeyHeap_contains(KeyHeap *h, PyObject *arg) {
    if (!PyLong_Check(arg)) return 0;
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
    return map_find(h, id) >= 0;
}

static void KeyHeap_dealloc(KeyHeap *h) {
    PyMem_Free(h->slots);
    PyMem_Free(h->heap);
    PyMem_Free(h->free_list);
    PyMem_Free(h->mkeys);
    PyMem_Free(h->mvals);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyMethodDef KeyHeap_methods[] = {
    {"push", (PyCFunction)KeyHeap_push, METH_O, "push(key): index key[3] with key (replaces its old key)."},
    {"remove", (PyCFunction)KeyHeap_remove, METH_O, "remove(entry_id) -> bool: drop the entry if indexed."},
    {"top", (PyCFunction)KeyHeap_top, METH_NOARGS, "top() -> entry_id of the smallest key, or None."},
    {"pop", (PyCFunction)KeyHeap_pop, METH_NOARGS, "pop() -> entry_id of the smallest key (removed), or None."},
    {"min_key", (PyCFunction)KeyHeap_min_key, METH_NOARGS, "min_key() -> the smallest key as stored, or None."},
    {"key_of", (PyCFunction)KeyHeap_key_of, METH_O, "key_of(entry_id) -> the stored key, or None."},
    {"clear", (PyCFunction)KeyHeap_clear, METH_NOARGS, "clear(): drop every entry."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods KeyHeap_as_sequence = {
    .sq_length = (lenfunc)KeyHeap_len,
    .sq_contains = (objobjproc)KeyHeap_contains,
};

static PyTypeObject KeyHeapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "saga_kernels._keyheap.KeyHeap",
    .tp_basicsize = sizeof(KeyHeap),
    .tp_dealloc = (destructor)KeyHeap_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Indexed min-heap of (tier, primary, tiebreak, entry_id) keys (native).",
    .tp_methods = KeyHeap_methods,
    .tp_as_sequence = &KeyHeap_as_sequence,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef keyheap_module = {
    PyModuleDef_HEAD_INIT, "_keyheap", "Native indexed min-heap of eviction keys.", -1, NULL,
};

PyMODINIT_FUNC PyInit__keyheap(void) {
    if (PyType_Ready(&KeyHeapType) < 0) return NULL;
    PyObject *m = PyModule_Create(&keyheap_module);
    if (!m) return NULL;
    Py_INCREF(&KeyHeapType);
    if (PyModule_AddObject(m, "KeyHeap", (PyObject *)&KeyHeapType) < 0) {
        Py_DECREF(&KeyHeapType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
