/* jobs: see jobs.h. Two intrusive FIFO lists under one mutex: queued (for the
 * threads) and finished (for the loop). */
#define _GNU_SOURCE
#include "jobs.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define BULK_NICE 5

struct jobs {
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *q_head, *q_tail;
    struct job *d_head, *d_tail;
    int pending;
    bool bulk;
};

static void push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static struct job *pop(struct job **head, struct job **tail)
{
    struct job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head) *tail = NULL;
    }
    return j;
}

static void *jobs_thread(void *arg)
{
    struct jobs *js = arg;
    /* Signals belong to the loop thread. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    if (js->bulk) {
        /* Only ever lowered, which needs no privilege; if it fails the
         * threads just compete as equals. */
        struct sched_param sp = {0};
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, (id_t)gettid());
        if (errno == 0) setpriority(PRIO_PROCESS, (id_t)gettid(), nice + BULK_NICE);
    }
    pthread_mutex_lock(&js->mu);
    for (;;) {
        struct job *j;
        while (!(j = pop(&js->q_head, &js->q_tail)))
            pthread_cond_wait(&js->cv, &js->mu);
        pthread_mutex_unlock(&js->mu);
        j->run(j);
        pthread_mutex_lock(&js->mu);
        push(&js->d_head, &js->d_tail, j);
        ev_async_send(js->loop, &js->wake);
    }
    return NULL;
}

static void jobs_on_done(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct jobs *js = w->data;
    for (;;) {
        pthread_mutex_lock(&js->mu);
        struct job *j = pop(&js->d_head, &js->d_tail);
        if (j) js->pending--;
        pthread_mutex_unlock(&js->mu);
        if (!j) break;
        j->done(j);
    }
}

struct jobs *jobs_start(struct ev_loop *loop, int threads, bool bulk)
{
    struct jobs *js = calloc(1, sizeof *js);
    if (!js) return NULL;
    js->loop = loop;
    js->bulk = bulk;
    pthread_mutex_init(&js->mu, NULL);
    pthread_cond_init(&js->cv, NULL);
    ev_async_init(&js->wake, jobs_on_done);
    js->wake.data = js;
    ev_async_start(loop, &js->wake);
    /* The pool is a helper, not a reference that keeps the loop running. */
    ev_unref(loop);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 256 * 1024);
        int rc = pthread_create(&t, &a, jobs_thread, js);
        pthread_attr_destroy(&a);
        if (rc != 0) return i ? js : NULL;
    }
    return js;
}

void jobs_submit(struct jobs *js, struct job *j)
{
    pthread_mutex_lock(&js->mu);
    js->pending++;
    push(&js->q_head, &js->q_tail, j);
    pthread_cond_signal(&js->cv);
    pthread_mutex_unlock(&js->mu);
}

int jobs_pending(const struct jobs *js)
{
    return js->pending;
}
