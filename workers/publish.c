/* publish: see publish.h. */
#define _GNU_SOURCE
#include "publish.h"

#include "container.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RETRY_AWAITED_MS 250 /* a failed attempt of an awaited event, again after */
#define RETRY_ASYNC_MS 1000  /* the same for an event nobody waits for */
#define MAX_SERVERS 32

/* An event on its way to the publisher thread. */
struct pmsg {
    char msgid[48];
    char *data;
    size_t len;
    int64_t not_before; /* monotonic ms */
    bool awaited;
    struct pmsg *next;
};

/* An acknowledgement (or a failure) on its way back to the loop. */
struct presult {
    char msgid[48];
    bool ok;
    char err[128];
    char *data; /* a failed one's bytes, to try again */
    size_t len;
    struct presult *next;
};

struct publisher {
    struct ev_loop *loop;
    char *subject;
    uint64_t timeout_ms;
    struct metrics_slot *metrics;
    char *servers[MAX_SERVERS];
    int n_servers;

    /* Loop side. */
    ev_async wake;
    struct publish_req *pending;
    int n_pending;
    unsigned long dropped;
    int outbox; /* spool/.events: the events nobody waits for, until acknowledged; -1: none */

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pmsg *q_head, *q_tail;
    int q_len;
    struct presult *r_head, *r_tail;
    bool stopping;

    /* The publisher thread's. */
    pthread_t thread;
    bool thread_started;
    natsConnection *nc;
    jsCtx *js;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An event bigger than this is not kept in the outbox (one is ~600 bytes). */
#define OUTBOX_EVENT_MAX (64 * 1024)

static void enqueue(struct publisher *p, const char *msgid, char *data, size_t len, bool awaited,
                    int delay_ms);

/* --- the queue to the thread (under mu) --------------------------------------------- */

static void enqueue_locked(struct publisher *p, struct pmsg *m)
{
    m->next = NULL;
    if (p->q_tail)
        p->q_tail->next = m;
    else
        p->q_head = m;
    p->q_tail = m;
    p->q_len++;
}

/* Drops the oldest event nobody waits for, to keep the queue bounded. */
static void drop_oldest_locked(struct publisher *p)
{
    struct pmsg *prev = NULL;
    for (struct pmsg *m = p->q_head; m; prev = m, m = m->next) {
        if (m->awaited) continue;
        if (prev)
            prev->next = m->next;
        else
            p->q_head = m->next;
        if (p->q_tail == m) p->q_tail = prev;
        p->q_len--;
        if (p->dropped++ % 1000 == 0)
            log_warn("publish: %d events wait for NATS; dropping the oldest (%s); %lu dropped so "
                     "far",
                     PUBLISH_QUEUE_MAX, m->msgid, p->dropped);
        metrics_publish(p->metrics, MP_DROPPED);
        if (p->outbox >= 0) unlinkat(p->outbox, m->msgid, 0); /* given up: not kept either */
        free(m->data);
        free(m);
        return;
    }
}

static void enqueue(struct publisher *p, const char *msgid, char *data, size_t len, bool awaited,
                    int delay_ms)
{
    struct pmsg *m = calloc(1, sizeof *m);
    if (!m) {
        free(data);
        return;
    }
    snprintf(m->msgid, sizeof m->msgid, "%s", msgid);
    m->data = data;
    m->len = len;
    m->awaited = awaited;
    m->not_before = now_ms() + delay_ms;
    pthread_mutex_lock(&p->mu);
    if (!awaited && p->q_len >= PUBLISH_QUEUE_MAX) drop_oldest_locked(p);
    enqueue_locked(p, m);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static char *copy(const char *s, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (c && n) memcpy(c, s, n);
    return c;
}

/* --- the publisher thread ----------------------------------------------------------- */

static void push_result(struct publisher *p, const char *msgid, bool ok, const char *err,
                        const char *data, size_t len)
{
    struct presult *r = calloc(1, sizeof *r);
    if (!r) return;
    snprintf(r->msgid, sizeof r->msgid, "%s", msgid ? msgid : "");
    r->ok = ok;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
    if (!ok && data) {
        r->data = copy(data, len);
        r->len = r->data ? len : 0;
    }
    pthread_mutex_lock(&p->mu);
    if (p->r_tail)
        p->r_tail->next = r;
    else
        p->r_head = r;
    p->r_tail = r;
    pthread_mutex_unlock(&p->mu);
    ev_async_send(p->loop, &p->wake);
}

/* cnats calls this on its own thread for every acknowledgement or failure. */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pa;
    struct publisher *p = closure;
    const char *id = NULL;
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
    if (!pae) {
        push_result(p, id, true, NULL, NULL, 0);
    } else {
        char err[128];
        snprintf(err, sizeof err, "%s",
                 pae->ErrText && pae->ErrText[0] ? pae->ErrText : natsStatus_GetText(pae->Err));
        push_result(p, id, false, err, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    }
    /* The handler owns the message (cnats' jsPubAckHandler): kept, every
     * event cost its worker ~0.7 KiB for good. */
    natsMsg_Destroy(msg);
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    log_info("publish: connected to NATS server %s", url);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct publisher *p = closure;
    if (__atomic_load_n(&p->stopping, __ATOMIC_RELAXED)) return; /* our own close */
    log_warn("publish: disconnected from NATS; reconnecting to another server of the cluster "
             "(events are buffered meanwhile)");
}

static void publish_one(struct publisher *p, struct pmsg *m)
{
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, p->subject, NULL, m->data, (int)m->len);
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = m->msgid; /* the Nats-Msg-Id header */
        po.MaxWait = PUBLISH_ATTEMPT_MS;
        s = js_PublishMsgAsync(p->js, &msg, &po);
    }
    if (s != NATS_OK) {
        const char *e = nats_GetLastError(NULL);
        push_result(p, m->msgid, false, e && e[0] ? e : natsStatus_GetText(s), m->data, m->len);
    }
    natsMsg_Destroy(msg); /* no effect once cnats took it */
    free(m->data);
    free(m);
}

static void *run(void *arg)
{
    struct publisher *p = arg;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetServers(o, (const char **)p->servers, p->n_servers);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, 16 * 1024 * 1024);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(o, 5000);
    /* tls:// (every server, config.c sees to it): never in the clear. The
     * server's certificate is checked against the system's trusted CAs. */
    if (s == NATS_OK && strncmp(p->servers[0], "tls://", 6) == 0) s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, p);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_connected, p);
    /* Not there at start: go on connecting in the background. */
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, p);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&p->nc, o);
        if (s == NATS_OK) on_connected(p->nc, p);
        if (s == NATS_NOT_YET_CONNECTED) {
            log_warn("publish: no NATS server answers yet%s; connecting in the background",
                     strncmp(p->servers[0], "tls://", 6) == 0
                         ? " over TLS (tls://: a server without TLS, or whose certificate "
                           "the system does not trust, is not used)"
                         : "");
            s = NATS_OK;
        }
    }
    if (s == NATS_OK) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.PublishAsync.AckHandler = on_ack;
        jo.PublishAsync.AckHandlerClosure = p;
        jo.PublishAsync.MaxPending = 4096;
        s = natsConnection_JetStream(&p->js, p->nc, &jo);
    }
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        log_error("publish: cannot set up the NATS connection: %s; every event fails",
                  natsStatus_GetText(s));
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int64_t now = now_ms(), next = now + 1000;
        struct pmsg *m = NULL, *prev = NULL;
        for (struct pmsg *q = p->q_head; q; prev = q, q = q->next) {
            if (q->not_before <= now) {
                m = q;
                break;
            }
            if (q->not_before < next) next = q->not_before;
        }
        if (m) {
            if (prev)
                prev->next = m->next;
            else
                p->q_head = m->next;
            if (p->q_tail == m) p->q_tail = prev;
            p->q_len--;
            pthread_mutex_unlock(&p->mu);
            if (p->js)
                publish_one(p, m);
            else {
                push_result(p, m->msgid, false, "no NATS connection", NULL, 0);
                free(m->data);
                free(m);
            }
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->stopping) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait = next - now;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* --- the loop side ------------------------------------------------------------------ */

static void complete(struct publish_req *r, bool ok, const char *reason)
{
    struct publisher *p = r->p;
    ev_timer_stop(p->loop, &r->deadline);
    if (r->prev)
        r->prev->next = r->next;
    else if (p->pending == r)
        p->pending = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    p->n_pending--;
    free(r->json);
    r->json = NULL;
    if (!r->stopped) metrics_publish(p->metrics, ok ? MP_ACKED : MP_FAILED);
    r->done(r, ok, reason);
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct publish_req *r = container_of(t, struct publish_req, deadline);
    char reason[256];
    if (!r->json)
        snprintf(reason, sizeof reason, "out of memory");
    else
        snprintf(reason, sizeof reason, "no acknowledgement from the stream within %llu ms%s%s",
                 (unsigned long long)r->p->timeout_ms, r->why[0] ? "; last error: " : "", r->why);
    complete(r, false, reason);
}

static struct publish_req *find(struct publisher *p, const char *msgid)
{
    for (struct publish_req *r = p->pending; r; r = r->next)
        if (strcmp(r->msgid, msgid) == 0) return r;
    return NULL;
}

/* An event that passed the scan is never retried after nobody waits for
 * it any more: its upload ended with "publish failed". */
static bool late_awaited(const char *msgid)
{
    const char *dot = strrchr(msgid, '.');
    return dot && (strcmp(dot, ".clean") == 0 || strcmp(dot, ".unscanned") == 0);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct publisher *p = container_of(a, struct publisher, wake);
    pthread_mutex_lock(&p->mu);
    struct presult *list = p->r_head;
    p->r_head = p->r_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        struct presult *res = list;
        list = res->next;
        struct publish_req *r = find(p, res->msgid);
        if (r && res->ok) {
            complete(r, true, "");
        } else if (r) {
            /* Failed (a timeout, the node went away...): again, until the
             * deadline; a copy that did reach the stream is dropped there. */
            snprintf(r->why, sizeof r->why, "%s", res->err);
            log_debug("publish: %s failed (%s); trying again", res->msgid, res->err);
            char *again = copy(r->json, r->len);
            if (again) enqueue(p, r->msgid, again, r->len, true, RETRY_AWAITED_MS);
        } else if (res->ok) {
            metrics_publish(p->metrics, MP_ACKED);
            if (p->outbox >= 0) unlinkat(p->outbox, res->msgid, 0); /* in the stream now */
        } else if (res->data && !late_awaited(res->msgid)) {
            log_debug("publish: %s failed (%s); trying again", res->msgid, res->err);
            enqueue(p, res->msgid, res->data, res->len, false, RETRY_ASYNC_MS);
            res->data = NULL;
        }
        free(res->data);
        free(res);
    }
}

/* Events a worker that ended (a reload, a shutdown, a crash) left in the
 * outbox, not yet acknowledged: published again (any worker that starts
 * does; copies the stream already has are dropped there by Nats-Msg-Id). */
static void take_over_outbox(struct publisher *p)
{
    int fd = dup(p->outbox);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < PUBLISH_QUEUE_MAX) {
        size_t nl = strlen(e->d_name);
        if (e->d_name[0] == '.' || nl >= sizeof ((struct pmsg *)0)->msgid) continue;
        int ef = openat(p->outbox, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (ef < 0) continue;
        char *data = NULL;
        if (fstat(ef, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
            st.st_size <= OUTBOX_EVENT_MAX && (data = malloc((size_t)st.st_size))) {
            if (pread(ef, data, (size_t)st.st_size, 0) == st.st_size) {
                enqueue(p, e->d_name, data, (size_t)st.st_size, false, 0);
                data = NULL;
                n++;
            }
        }
        free(data);
        close(ef);
    }
    closedir(d);
    if (n) log_info("publish: %d events that a worker left unacknowledged are published again", n);
}

struct publisher *publish_start(struct ev_loop *loop, const char *urls, const char *subject,
                                uint64_t timeout_ms, struct metrics_slot *metrics, int outbox)
{
    struct publisher *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->outbox = outbox;
    p->loop = loop;
    p->subject = strdup(subject);
    p->timeout_ms = timeout_ms;
    p->metrics = metrics;
    char *list = strdup(urls);
    if (!p->subject || !list) {
        free(list);
        free(p->subject);
        free(p);
        return NULL;
    }
    for (char *save = NULL, *u = strtok_r(list, ",", &save); u && p->n_servers < MAX_SERVERS;
         u = strtok_r(NULL, ",", &save))
        p->servers[p->n_servers++] = strdup(u);
    free(list);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    ev_async_init(&p->wake, on_wake);
    ev_async_start(loop, &p->wake);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        log_error("publish: cannot start the publisher thread");
        return p; /* every event fails: its deadline passes */
    }
    p->thread_started = true;
    if (p->outbox >= 0) take_over_outbox(p);
    return p;
}

void publish_submit(struct publisher *p, struct publish_req *r, const char *id,
                    const char *verdict, char *json, size_t len)
{
    r->p = p;
    snprintf(r->msgid, sizeof r->msgid, "%s.%s", id, verdict);
    r->json = json;
    r->len = len;
    r->why[0] = '\0';
    r->stopped = false;
    r->prev = NULL;
    r->next = p->pending;
    if (p->pending) p->pending->prev = r;
    p->pending = r;
    p->n_pending++;
    ev_init(&r->deadline, on_deadline);
    ev_timer_set(&r->deadline, json ? (double)p->timeout_ms / 1e3 : 0.0, 0.0);
    ev_timer_start(p->loop, &r->deadline);
    char *c = json ? copy(json, len) : NULL;
    if (c) enqueue(p, r->msgid, c, len, true, 0);
}

void publish_async(struct publisher *p, const char *id, const char *verdict, char *json,
                   size_t len)
{
    if (!json) return;
    char msgid[48];
    snprintf(msgid, sizeof msgid, "%s.%s", id, verdict);
    /* Kept in the outbox until the stream has it: this worker may end
     * (reload, shutdown, crash) before NATS is back. A small write to the
     * page cache; it outlives the worker, not the machine. */
    int fd = p->outbox >= 0 && len <= OUTBOX_EVENT_MAX
                 ? openat(p->outbox, msgid, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                          0640)
                 : -1;
    if (fd >= 0) {
        if (write(fd, json, len) != (ssize_t)len) unlinkat(p->outbox, msgid, 0);
        close(fd);
    }
    enqueue(p, msgid, json, len, false, 0);
}

void publish_give_up(struct publisher *p)
{
    if (!p) return;
    while (p->pending) {
        struct publish_req *r = p->pending;
        r->stopped = true;
        complete(r, false, "stopped at shutdown_timeout");
    }
}

int publish_pending(const struct publisher *p)
{
    return p ? p->n_pending : 0;
}

void publish_stop(struct publisher *p, int wait_ms)
{
    if (!p || !p->thread_started) return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stopping, true, __ATOMIC_RELAXED);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000 + 1;
    if (pthread_timedjoin_np(p->thread, NULL, &ts) != 0) return;
    if (p->js) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = wait_ms;
        js_PublishAsyncComplete(p->js, &po); /* what is in flight, acknowledged */
        jsCtx_Destroy(p->js);
    }
    if (p->nc) {
        natsConnection_Close(p->nc);
        natsConnection_Destroy(p->nc);
    }
}
