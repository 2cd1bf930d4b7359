/* lib/metrics.c — rill_metrics: counters with consistent snapshots.
 *
 * Synchronisation is a seqlock whose sequence word is also the writers'
 * lock:
 *  - a writer (a stage's signal or request path) takes the lock by turning
 *    an even sequence odd with one CAS, stores the new field values, and
 *    releases it by storing the next even value. Writers are serialised, so
 *    inside the lock they use plain loads and stores, no read-modify-writes:
 *    an update costs one CAS and one store, plus the field stores. The critical section never calls out or allocates, so a
 *    contending writer spins briefly, then yields its CPU (the holder may
 *    have been preempted on a loaded machine).
 *  - a reader (rill_metrics_snapshot) does not lock: it reads the
 *    sequence, copies the fields, and retries if the sequence was odd or
 *    moved meanwhile. After a bounded number of retries it takes the lock
 *    itself, so a reader makes progress even under a constant stream of
 *    writers.
 * Fields are _Atomic so that a reader's racy copy is not a data race. The
 * orderings avoid standalone fences (ThreadSanitizer does not model them,
 * and this way it checks the whole scheme): a writer stores each field with
 * release, so a reader that loads (with acquire) any value a writer stored
 * also sees that writer's odd sequence, and its re-check fails; the acquire
 * field loads also keep the re-check from moving before them. On x86 both
 * are plain moves. (Boehm, "Can seqlocks get along with programming
 * language memory models?", 2012, discusses the alternatives.)
 *
 * Invariant: seq is odd exactly while one thread holds the lock; fields
 * change only while it is odd.
 */
#include "alloc-internal.h"
#include "metrics-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum {
    F_RECEIVED,
    F_EMITTED,
    F_DISCARDED,          /* RILL__DISCARD_NREASONS slots, in reason order */
    F_REFUSED = F_DISCARDED + RILL__DISCARD_NREASONS,
    F_QUEUED,
    F_HIGH_WATER,
    F_CAPACITY,
    F_DEMAND,
    F_PAUSED,
    F_PAUSES,
    F_COUNT
};

struct rill_metrics {
    _Atomic long refs;
    char *name;
    _Atomic uint32_t seq;
    _Atomic uint64_t v[F_COUNT];
};

/* ---------------------------------------------------------------- lifetime */

rill_metrics *rill_metrics_new(const char *name)
{
    if (!name) {
        errno = EINVAL;
        return NULL;
    }
    rill_metrics *m = rill__calloc(sizeof *m);
    if (!m)
        return NULL;
    m->name = rill__strdup(name);
    if (!m->name) {
        rill__free(m);
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&m->refs, 1);
    atomic_init(&m->seq, 0);
    for (int i = 0; i < F_COUNT; i++)
        atomic_init(&m->v[i], 0);
    return m;
}

rill_metrics *rill_metrics_ref(rill_metrics *m)
{
    /* Relaxed: the caller already holds a reference. */
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void rill_metrics_unref(rill_metrics *m)
{
    /* acq_rel: the last owner must see every other owner's writes. */
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    rill__free(m->name);
    rill__free(m);
}

/* ---------------------------------------------------------------- the lock */

/* Takes the lock; returns the (even) sequence it found. */
static uint32_t seq_lock(rill_metrics *m)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t s = atomic_load_explicit(&m->seq, memory_order_relaxed);
        /* Acquire on success: this writer must see the previous holder's
         * field stores, published by its release store of the sequence. */
        if (!(s & 1) && atomic_compare_exchange_weak_explicit(&m->seq, &s, s + 1,
                                                              memory_order_acquire,
                                                              memory_order_relaxed))
            return s;
        if (++spins >= 64)
            sched_yield();
    }
}

static void seq_unlock(rill_metrics *m, uint32_t s)
{
    /* Release: publishes the field stores to the next holder and readers. */
    atomic_store_explicit(&m->seq, s + 2, memory_order_release);
}

/* ---------------------------------------------------------------- writers */

/* Inside the lock: writers are serialised, so a relaxed load sees the
 * latest value. */
static uint64_t get(rill_metrics *m, int f)
{
    return atomic_load_explicit(&m->v[f], memory_order_relaxed);
}

/* Release: a reader that sees this value also sees the odd sequence
 * stored before it (see the top of the file). */
static void put(rill_metrics *m, int f, uint64_t x)
{
    atomic_store_explicit(&m->v[f], x, memory_order_release);
}

static void add(rill_metrics *m, int f, uint64_t n)
{
    if (n)
        put(m, f, get(m, f) + n);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b >= UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* demand after `emitted` items left and `requested` more arrived. */
static uint64_t next_demand(uint64_t demand, uint64_t emitted, uint64_t requested)
{
    if (demand != RILL_UNBOUNDED)
        demand = emitted >= demand ? 0 : demand - emitted;
    return sat_add(demand, requested);
}

static uint64_t next_depth(uint64_t depth, int64_t change)
{
    if (change >= 0)
        return depth + (uint64_t)change;
    uint64_t down = (uint64_t)0 - (uint64_t)change;
    return down >= depth ? 0 : depth - down;
}

/* The gauges: changes, then outright sets, then the derived fields. */
static void apply_gauges(rill_metrics *m, const rill__metrics_delta *d)
{
    uint64_t depth = next_depth(get(m, F_QUEUED), d->queued_change);
    uint64_t demand = next_demand(get(m, F_DEMAND), d->emitted, d->requested);
    if (d->set & RILL__METRICS_SET_QUEUED)
        depth = d->queued;
    if (d->set & RILL__METRICS_SET_DEMAND)
        demand = d->demand;
    if (d->set & RILL__METRICS_SET_CAPACITY)
        put(m, F_CAPACITY, d->capacity);
    if (d->set & RILL__METRICS_SET_PAUSED) {
        uint64_t paused = d->paused != 0;
        if (paused && !get(m, F_PAUSED))
            add(m, F_PAUSES, 1);
        put(m, F_PAUSED, paused);
    }
    put(m, F_QUEUED, depth);
    if (depth > get(m, F_HIGH_WATER))
        put(m, F_HIGH_WATER, depth);
    put(m, F_DEMAND, demand);
}

void rill__metrics_apply(rill_metrics *m, const rill__metrics_delta *d)
{
    uint32_t s = seq_lock(m);
    add(m, F_RECEIVED, d->received);
    add(m, F_EMITTED, d->emitted);
    add(m, F_REFUSED, d->refused);
    for (int i = 0; i < RILL__DISCARD_NREASONS; i++)
        add(m, F_DISCARDED + i, d->discarded[i]);
    apply_gauges(m, d);
    seq_unlock(m, s);
}

/* ---------------------------------------------------------------- readers */

/* Acquire: pairs with put's release, and keeps the sequence re-check
 * after every field load. */
static void copy_fields(rill_metrics *m, uint64_t *out)
{
    for (int i = 0; i < F_COUNT; i++)
        out[i] = atomic_load_explicit(&m->v[i], memory_order_acquire);
}

/* Optimistic copy: 1 when it saw no writer. */
static int try_read(rill_metrics *m, uint64_t *out)
{
    /* Acquire: the copy sees at least the fields of the writer whose
     * release store gave this sequence. */
    uint32_t s1 = atomic_load_explicit(&m->seq, memory_order_acquire);
    if (s1 & 1)
        return 0;
    copy_fields(m, out);
    return atomic_load_explicit(&m->seq, memory_order_relaxed) == s1;
}

static void read_fields(rill_metrics *m, uint64_t *out)
{
    for (int tries = 0; tries < 256; tries++)
        if (try_read(m, out))
            return;
    /* Writers keep winning: take the lock like one of them. */
    uint32_t s = seq_lock(m);
    copy_fields(m, out);
    seq_unlock(m, s);
}

static void fill_values(const uint64_t *v, rill_metrics_values *out)
{
    out->version = RILL_METRICS_VALUES_VERSION;
    out->received = v[F_RECEIVED];
    out->emitted = v[F_EMITTED];
    out->discarded_filtered = v[F_DISCARDED + RILL__DISCARD_FILTERED];
    out->discarded_overflow = v[F_DISCARDED + RILL__DISCARD_OVERFLOW];
    out->discarded_cancelled = v[F_DISCARDED + RILL__DISCARD_CANCELLED];
    out->discarded_expired = v[F_DISCARDED + RILL__DISCARD_EXPIRED];
    out->refused = v[F_REFUSED];
    out->queued = v[F_QUEUED];
    out->queued_high_water = v[F_HIGH_WATER];
    out->capacity = v[F_CAPACITY];
    out->demand_outstanding = v[F_DEMAND];
    out->paused = (uint32_t)v[F_PAUSED];
    out->pauses = v[F_PAUSES];
}

int rill_metrics_snapshot(const rill_metrics *m, rill_metrics_values *out)
{
    if (!m || !out || out->version == 0)
        return EINVAL;
    uint64_t v[F_COUNT];
    /* The object is never const underneath (rill_metrics_new allocates
     * it); a reader that falls back to the lock writes the sequence. */
    read_fields((rill_metrics *)m, v);
    fill_values(v, out);
    return 0;
}

/* ---------------------------------------------------------------- Prometheus text */

/* An snprintf-like sink: copies what fits, counts everything. */
typedef struct text {
    char *buf;
    size_t len, pos;
} text;

static void put_bytes(text *t, const char *s, size_t n)
{
    if (t->pos < t->len) {
        size_t room = t->len - t->pos;
        memcpy(t->buf + t->pos, s, n < room ? n : room);
    }
    t->pos += n;
}

static void put_str(text *t, const char *s)
{
    put_bytes(t, s, strlen(s));
}

/* A label value, escaped as the exposition format requires. */
static void put_label(text *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put_str(t, "\\\\");
        else if (*s == '"')
            put_str(t, "\\\"");
        else if (*s == '\n')
            put_str(t, "\\n");
        else
            put_bytes(t, s, 1);
    }
}

static void put_u64(text *t, uint64_t x)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRIu64, x);
    put_bytes(t, num, (size_t)n);
}

typedef struct family {
    const char *name, *type, *help;
    int field;
    int by_reason;         /* one series per discard reason, fields in reason order */
    int inf;               /* RILL_UNBOUNDED is written +Inf */
} family;

static const char *const reasons[RILL__DISCARD_NREASONS] = {
    [RILL__DISCARD_FILTERED] = "filtered",
    [RILL__DISCARD_OVERFLOW] = "overflow",
    [RILL__DISCARD_CANCELLED] = "cancelled",
    [RILL__DISCARD_EXPIRED] = "expired",
};

static const family families[] = {
    { "rill_items_received_total", "counter", "Items received from upstream.",
      F_RECEIVED, 0, 0 },
    { "rill_items_emitted_total", "counter", "Items emitted downstream.", F_EMITTED, 0, 0 },
    { "rill_items_discarded_total", "counter", "Items discarded instead of delivered, by reason.",
      F_DISCARDED, 1, 0 },
    { "rill_emit_refused_total", "counter", "Emit calls that did not accept their item.",
      F_REFUSED, 0, 0 },
    { "rill_queue_items", "gauge", "Items queued now.", F_QUEUED, 0, 0 },
    { "rill_queue_high_water_items", "gauge", "Most items ever queued at once.",
      F_HIGH_WATER, 0, 0 },
    { "rill_queue_capacity_items", "gauge", "Capacity of the queue in items.",
      F_CAPACITY, 0, 0 },
    { "rill_demand_outstanding", "gauge",
      "Items requested downstream and not yet emitted (+Inf: unbounded).", F_DEMAND, 0, 1 },
    { "rill_paused", "gauge", "1 while the stage is paused above its high watermark.",
      F_PAUSED, 0, 0 },
    { "rill_pauses_total", "counter", "Times the stage went from unpaused to paused.",
      F_PAUSES, 0, 0 },
};

#define NFAMILIES (sizeof families / sizeof families[0])

static void put_header(text *t, const family *f)
{
    put_str(t, "# HELP ");
    put_str(t, f->name);
    put_str(t, " ");
    put_str(t, f->help);
    put_str(t, "\n# TYPE ");
    put_str(t, f->name);
    put_str(t, " ");
    put_str(t, f->type);
    put_str(t, "\n");
}

/* One line: name{stage="...",reason="..."} value */
static void put_series(text *t, const family *f, const char *stage, const char *reason,
                       uint64_t value)
{
    put_str(t, f->name);
    put_str(t, "{stage=\"");
    put_label(t, stage);
    if (reason) {
        put_str(t, "\",reason=\"");
        put_str(t, reason);
    }
    put_str(t, "\"} ");
    if (f->inf && value == RILL_UNBOUNDED)
        put_str(t, "+Inf");
    else
        put_u64(t, value);
    put_str(t, "\n");
}

static void put_object(text *t, const family *f, const char *stage, const uint64_t *v)
{
    if (!f->by_reason) {
        put_series(t, f, stage, NULL, v[f->field]);
        return;
    }
    for (int r = 0; r < RILL__DISCARD_NREASONS; r++)
        put_series(t, f, stage, reasons[r], v[f->field + r]);
}

/* Every family, HELP and TYPE once, then one series (or one per reason)
 * for each non-NULL entry of ms, whose fields are the matching row of vals. */
static void put_all(text *t, rill_metrics *const *ms, size_t n, const uint64_t (*vals)[F_COUNT])
{
    for (size_t fi = 0; fi < NFAMILIES; fi++) {
        put_header(t, &families[fi]);
        for (size_t i = 0; i < n; i++)
            if (ms[i])
                put_object(t, &families[fi], ms[i]->name, vals[i]);
    }
}

/* Snapshots every object once, up front, so each object's series agree.
 * Returns NULL (errno ENOMEM) when there is no memory for them. */
static uint64_t (*snapshot_all(rill_metrics *const *ms, size_t n))[F_COUNT]
{
    uint64_t (*vals)[F_COUNT] = NULL;
    if (n <= SIZE_MAX / sizeof *vals)
        vals = rill__malloc(n * sizeof *vals);
    else
        errno = ENOMEM;
    for (size_t i = 0; vals && i < n; i++)
        if (ms[i])
            read_fields(ms[i], vals[i]);
    return vals;
}

size_t rill_metrics_format_prometheus(rill_metrics *const *ms, size_t n, char *buf, size_t len)
{
    text t = { .buf = buf, .len = buf ? len : 0, .pos = 0 };
    size_t live = 0;
    for (size_t i = 0; ms && i < n; i++)
        live += ms[i] != NULL;
    if (live > 0) {
        uint64_t (*vals)[F_COUNT] = snapshot_all(ms, n);
        if (vals)
            put_all(&t, ms, n, (const uint64_t (*)[F_COUNT])vals);
        rill__free(vals);
    }
    if (t.len > 0)
        t.buf[t.pos < t.len ? t.pos : t.len - 1] = '\0';
    return t.pos;
}
