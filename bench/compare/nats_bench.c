// nats_bench: zbench's request-reply load against NATS (cnats): echo responders, and a client.
//
// `respond` runs echo responders in a queue group, each on its own connection, until SIGINT or
// SIGTERM. `load` drives the two shapes zbench measures, sync (one request at a time per client,
// natsConnection_Request) and pipelined (a window of requests in flight on one connection,
// PublishRequest with a reply subject per window slot), and prints one JSON line per point with
// zbench's JSON field names, so bench/compare/run.sh can put the two side by side.
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

enum {
    kReplyTimeoutMs = 10000,  // as zbench: a request unanswered this long is lost
    kMaxListValues = 64,
};

static const char kUsage[] =
    "nats_bench: zbench's request-reply load against NATS.\n"
    "Usage:\n"
    "  nats_bench respond --url URL [--subject echo] [--queue echo] [--responders 1]\n"
    "                     [--send-asap]\n"
    "  nats_bench load --url URL [--subject echo] [--mode sync,pipelined] [--clients 1]\n"
    "                  [--inflight 16,256] [--size 32] [--duration 2] [--warmup 0.3]\n"
    "                  [--workers N] [--send-asap]\n"
    "  nats_bench --version\n"
    "respond: echo responders in a queue group, one connection each; prints \"ready\" once the\n"
    "  server has their subscriptions, and runs until SIGINT or SIGTERM.\n"
    "load: sweeps mode x size x inflight x clients (lists are comma-separated) and prints one\n"
    "  JSON line per point, with zbench's field names. --workers only labels the points: how\n"
    "  many responders are serving. Latency is per request, send to reply, exact percentiles.\n"
    "--send-asap: natsOptions_SetSendAsap, a socket write per publish. Without it the library\n"
    "  buffers publishes and its flusher thread writes them after waiting up to 1 ms for more.\n"
    "  natsConnection_Request sends at once either way.\n";

// ---- small utilities ----------------------------------------------------------------------

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_seconds(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void fail(const char* what, natsStatus status) {
    fprintf(stderr, "nats_bench: %s: %s", what, natsStatus_GetText(status));
    const char* detail = nats_GetLastError(NULL);
    if (detail != NULL && detail[0] != '\0') fprintf(stderr, " (%s)", detail);
    fputc('\n', stderr);
    exit(1);
}

static void* checked_calloc(size_t count, size_t size) {
    void* p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "nats_bench: out of memory (%zu x %zu bytes)\n", count, size);
        exit(1);
    }
    return p;
}

typedef struct {
    size_t values[kMaxListValues];
    size_t count;
} SizeList;

// A comma-separated list of whole numbers in [min, max]; exits with the bad value otherwise.
static SizeList parse_sizes(const char* flag, const char* text, size_t min, size_t max) {
    SizeList list = {.count = 0};
    const char* p = text;
    while (*p != '\0') {
        char* end = NULL;
        const unsigned long long value = strtoull(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || value < min || value > max ||
            list.count == kMaxListValues) {
            fprintf(stderr,
                    "nats_bench: %s %s: expected up to %d numbers in [%zu, %zu], "
                    "comma-separated\n",
                    flag, text, kMaxListValues, min, max);
            exit(2);
        }
        list.values[list.count++] = (size_t)value;
        p = *end == ',' ? end + 1 : end;
    }
    if (list.count == 0) {
        fprintf(stderr, "nats_bench: %s needs a value\n", flag);
        exit(2);
    }
    return list;
}

// One whole number in [min, max].
static size_t parse_count(const char* flag, const char* text, size_t min, size_t max) {
    const SizeList list = parse_sizes(flag, text, min, max);
    if (list.count != 1) {
        fprintf(stderr, "nats_bench: %s %s: expected one number\n", flag, text);
        exit(2);
    }
    return list.values[0];
}

static double parse_seconds(const char* flag, const char* text, double min) {
    char* end = NULL;
    const double value = strtod(text, &end);
    if (end == text || *end != '\0' || !(value >= min) || value > 3600) {
        fprintf(stderr, "nats_bench: %s %s: expected seconds in [%g, 3600]\n", flag, text, min);
        exit(2);
    }
    return value;
}

static natsOptions* connection_options(const char* url, bool send_asap) {
    natsOptions* options = NULL;
    natsStatus s = natsOptions_Create(&options);
    if (s == NATS_OK) s = natsOptions_SetURL(options, url);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(options, send_asap);
    // A benchmark against a server that went away should stop, not reconnect and wait.
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(options, false);
    if (s != NATS_OK) fail("setting connection options", s);
    return options;
}

static natsConnection* connect_to(natsOptions* options, const char* url) {
    natsConnection* connection = NULL;
    const natsStatus s = natsConnection_Connect(&connection, options);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_bench: cannot connect to %s: is nats-server running there?\n", url);
        fail("connect", s);
    }
    return connection;
}

// ---- respond: echo responders ---------------------------------------------------------------

static void echo_request(natsConnection* connection, natsSubscription* subscription,
                         natsMsg* request, void* closure) {
    (void)subscription;
    (void)closure;
    const char* reply_to = natsMsg_GetReply(request);
    if (reply_to != NULL) {
        const natsStatus s = natsConnection_Publish(connection, reply_to, natsMsg_GetData(request),
                                                    natsMsg_GetDataLength(request));
        if (s != NATS_OK) fprintf(stderr, "nats_bench: reply: %s\n", natsStatus_GetText(s));
    }
    natsMsg_Destroy(request);
}

// The server is gone and reconnecting is off: nothing left to serve, so stop like on SIGTERM.
static void connection_closed(natsConnection* connection, void* closure) {
    (void)connection;
    (void)closure;
    kill(getpid(), SIGTERM);
}

static int respond(const char* url, const char* subject, const char* queue, size_t responders,
                   bool send_asap) {
    // Blocked before the library starts its threads, so they inherit the mask and only
    // sigwait() below sees these signals.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    natsOptions* options = connection_options(url, send_asap);
    natsStatus s = natsOptions_SetClosedCB(options, connection_closed, NULL);
    if (s != NATS_OK) fail("setting the closed callback", s);
    natsConnection** connections = checked_calloc(responders, sizeof *connections);
    natsSubscription** subscriptions = checked_calloc(responders, sizeof *subscriptions);
    for (size_t i = 0; i < responders; ++i) {
        connections[i] = connect_to(options, url);
        s = natsConnection_QueueSubscribe(&subscriptions[i], connections[i], subject, queue,
                                          echo_request, NULL);
        // The default cap (65536 messages) would drop requests under a deep pipelined window.
        if (s == NATS_OK) s = natsSubscription_SetPendingLimits(subscriptions[i], -1, -1);
        // A flush is a PING/PONG round trip: once back, the server has the subscription.
        if (s == NATS_OK) s = natsConnection_Flush(connections[i]);
        if (s != NATS_OK) fail("subscribing the echo responder", s);
    }
    printf("ready\n");
    fflush(stdout);

    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    for (size_t i = 0; i < responders; ++i) {
        natsSubscription_Destroy(subscriptions[i]);
        natsConnection_Destroy(connections[i]);
    }
    natsOptions_Destroy(options);
    free(subscriptions);
    free(connections);
    nats_Close();
    return 0;
}

// ---- load: sync and pipelined clients -------------------------------------------------------

typedef struct {
    int64_t* ns;
    size_t count;
    size_t capacity;
} Samples;

static void samples_add(Samples* samples, int64_t ns) {
    if (samples->count == samples->capacity) {
        samples->capacity = samples->capacity ? 2 * samples->capacity : (size_t)1 << 16;
        int64_t* grown = realloc(samples->ns, samples->capacity * sizeof *grown);
        if (grown == NULL) {
            fprintf(stderr, "nats_bench: out of memory for %zu latency samples\n",
                    samples->capacity);
            exit(1);
        }
        samples->ns = grown;
    }
    samples->ns[samples->count++] = ns;
}

// Counts only requests sent after the warm-up, as zbench does.
typedef struct {
    uint64_t sent;
    uint64_t ok;
    uint64_t no_reply;       // nothing back within kReplyTimeoutMs: zbench's "000"
    uint64_t no_responders;  // the server's 503: nobody subscribed to the subject
    uint64_t bad_reply;      // a reply whose length is not the request's: not an echo
    Samples latency;
} Tally;

typedef struct {
    const char* subject;
    bool pipelined;
    size_t window;
    size_t size;
    const char* body;
    atomic_bool measuring;
    atomic_bool stop_sending;
} PointSpec;

typedef struct {
    PointSpec* spec;
    natsConnection* connection;
    pthread_t thread;
    Tally tally;
} Client;

static void* run_sync_client(void* arg) {
    Client* client = arg;
    const PointSpec* spec = client->spec;
    Tally* tally = &client->tally;
    while (!atomic_load_explicit(&client->spec->stop_sending, memory_order_relaxed)) {
        const bool measured = atomic_load_explicit(&client->spec->measuring, memory_order_relaxed);
        natsMsg* reply = NULL;
        const int64_t sent_at = now_ns();
        const natsStatus s = natsConnection_Request(&reply, client->connection, spec->subject,
                                                    spec->body, (int)spec->size, kReplyTimeoutMs);
        const int64_t replied_at = now_ns();
        if (measured) ++tally->sent;
        if (s == NATS_OK) {
            if (measured) {
                if ((size_t)natsMsg_GetDataLength(reply) == spec->size) {
                    ++tally->ok;
                    samples_add(&tally->latency, replied_at - sent_at);
                } else {
                    ++tally->bad_reply;
                }
            }
            natsMsg_Destroy(reply);
        } else if (s == NATS_NO_RESPONDERS) {
            if (measured) ++tally->no_responders;
        } else if (s == NATS_TIMEOUT) {
            if (measured) ++tally->no_reply;
            break;  // as zbench: a client whose request is lost stops there
        } else {
            fail("request", s);
        }
    }
    return NULL;
}

// One request in flight per slot; the slot's number is the last token of its reply subject, so
// a reply finds its send time whatever order the responders answer in.
typedef struct {
    int64_t sent_at;
    bool measured;
    bool in_flight;
} Slot;

static void* run_pipelined_client(void* arg) {
    Client* client = arg;
    const PointSpec* spec = client->spec;
    Tally* tally = &client->tally;
    const size_t window = spec->window;

    natsInbox* inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK) fail("creating an inbox", s);
    const size_t subject_length = strlen(inbox) + 24;
    char* reply_subjects = checked_calloc(window, subject_length);
    for (size_t i = 0; i < window; ++i)
        snprintf(reply_subjects + i * subject_length, subject_length, "%s.%zu", inbox, i);
    char* wildcard = checked_calloc(1, subject_length);
    snprintf(wildcard, subject_length, "%s.*", inbox);

    natsSubscription* replies = NULL;
    s = natsConnection_SubscribeSync(&replies, client->connection, wildcard);
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(replies, -1, -1);
    if (s == NATS_OK) s = natsConnection_Flush(client->connection);
    if (s != NATS_OK) fail("subscribing to the reply inbox", s);

    Slot* slots = checked_calloc(window, sizeof *slots);
    size_t* free_slots = checked_calloc(window, sizeof *free_slots);
    size_t free_count = window;
    for (size_t i = 0; i < window; ++i)
        free_slots[i] = window - 1 - i;

    bool sending = true;
    while (true) {
        while (sending && free_count > 0) {
            if (atomic_load_explicit(&client->spec->stop_sending, memory_order_relaxed)) {
                sending = false;
                break;
            }
            const size_t slot = free_slots[--free_count];
            const bool measured =
                atomic_load_explicit(&client->spec->measuring, memory_order_relaxed);
            slots[slot] = (Slot){now_ns(), measured, true};
            s = natsConnection_PublishRequest(client->connection, spec->subject,
                                              reply_subjects + slot * subject_length, spec->body,
                                              (int)spec->size);
            if (s != NATS_OK) fail("publishing a request", s);
            if (measured) ++tally->sent;
        }
        const size_t in_flight = window - free_count;
        if (in_flight == 0) {
            if (!sending) break;
            continue;
        }
        natsMsg* reply = NULL;
        s = natsSubscription_NextMsg(&reply, replies, kReplyTimeoutMs);
        if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) {
            // Either way the window's requests will not be answered; which slots the server's
            // 503 was for, the library does not say.
            uint64_t lost = 0;
            for (size_t i = 0; i < window; ++i)
                lost += slots[i].in_flight && slots[i].measured;
            *(s == NATS_TIMEOUT ? &tally->no_reply : &tally->no_responders) += lost;
            break;
        }
        if (s != NATS_OK) fail("receiving a reply", s);
        const int64_t replied_at = now_ns();
        const char* dot = strrchr(natsMsg_GetSubject(reply), '.');
        const size_t slot = dot != NULL ? strtoul(dot + 1, NULL, 10) : window;
        if (slot < window && slots[slot].in_flight) {
            slots[slot].in_flight = false;
            free_slots[free_count++] = slot;
            if (slots[slot].measured) {
                if ((size_t)natsMsg_GetDataLength(reply) == spec->size) {
                    ++tally->ok;
                    samples_add(&tally->latency, replied_at - slots[slot].sent_at);
                } else {
                    ++tally->bad_reply;
                }
            }
        }
        natsMsg_Destroy(reply);
    }
    natsSubscription_Destroy(replies);
    free(free_slots);
    free(slots);
    free(wildcard);
    free(reply_subjects);
    natsInbox_Destroy(inbox);
    return NULL;
}

static int compare_int64(const void* a, const void* b) {
    const int64_t x = *(const int64_t*)a;
    const int64_t y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

// Nearest rank over sorted samples, in microseconds: zbench's LatencyRecorder.
static double percentile_us(const Samples* sorted, double p) {
    if (sorted->count == 0) return 0;
    size_t rank = (size_t)ceil(p * (double)sorted->count);
    if (rank < 1) rank = 1;
    if (rank > sorted->count) rank = sorted->count;
    return (double)sorted->ns[rank - 1] / 1e3;
}

typedef struct {
    const char* url;
    const char* subject;
    double duration_s;
    double warmup_s;
    size_t workers;
    bool send_asap;
} LoadSettings;

static void run_point(const LoadSettings* settings, natsOptions* options, const char* mode,
                      size_t clients, size_t window, size_t size) {
    char* body = checked_calloc(1, size);
    memset(body, 'x', size);
    PointSpec spec = {.subject = settings->subject,
                      .pipelined = strcmp(mode, "pipelined") == 0,
                      .window = window,
                      .size = size,
                      .body = body};
    atomic_init(&spec.measuring, settings->warmup_s <= 0);
    atomic_init(&spec.stop_sending, false);

    Client* all = checked_calloc(clients, sizeof *all);
    for (size_t i = 0; i < clients; ++i) {
        all[i].spec = &spec;
        all[i].connection = connect_to(options, settings->url);
        const int64_t max_payload = natsConnection_GetMaxPayload(all[i].connection);
        if ((int64_t)size > max_payload) {
            fprintf(stderr,
                    "nats_bench: --size %zu exceeds the server's max_payload of %" PRId64
                    " bytes: raise max_payload in nats-server's configuration\n",
                    size, max_payload);
            exit(2);
        }
    }
    // A thread per client: sync requests block. zbench shares threads between connections, but
    // compares at one client by default, where both have one.
    for (size_t i = 0; i < clients; ++i) {
        if (pthread_create(&all[i].thread, NULL,
                           spec.pipelined ? run_pipelined_client : run_sync_client, &all[i]) != 0) {
            fprintf(stderr, "nats_bench: cannot start client thread %zu\n", i);
            exit(1);
        }
    }
    int64_t measured_from = now_ns();
    if (settings->warmup_s > 0) {
        sleep_seconds(settings->warmup_s);
        measured_from = now_ns();
        atomic_store(&spec.measuring, true);
    }
    sleep_seconds(settings->duration_s);
    atomic_store(&spec.stop_sending, true);
    for (size_t i = 0; i < clients; ++i)
        pthread_join(all[i].thread, NULL);
    const double seconds = (double)(now_ns() - measured_from) / 1e9;

    Tally total = {0};
    for (size_t i = 0; i < clients; ++i) {
        const Tally* t = &all[i].tally;
        total.sent += t->sent;
        total.ok += t->ok;
        total.no_reply += t->no_reply;
        total.no_responders += t->no_responders;
        total.bad_reply += t->bad_reply;
        for (size_t j = 0; j < t->latency.count; ++j)
            samples_add(&total.latency, t->latency.ns[j]);
        free(t->latency.ns);
        natsConnection_Destroy(all[i].connection);
    }
    qsort(total.latency.ns, total.latency.count, sizeof *total.latency.ns, compare_int64);
    double sum_ns = 0;
    for (size_t j = 0; j < total.latency.count; ++j)
        sum_ns += (double)total.latency.ns[j];
    const double mean_us = total.latency.count ? sum_ns / (double)total.latency.count / 1e3 : 0;
    const double rate = seconds > 0 ? (double)total.ok / seconds : 0;

    // zbench keys its errors by status code; "000" is its no_reply, 503 its "no worker".
    char errors[160] = "";
    size_t used = 0;
    const struct {
        const char* key;
        uint64_t count;
    } error_counts[] = {
        {"000", total.no_reply}, {"503", total.no_responders}, {"bad_reply", total.bad_reply}};
    for (size_t i = 0; i < sizeof error_counts / sizeof error_counts[0]; ++i) {
        if (error_counts[i].count == 0) continue;
        used += (size_t)snprintf(errors + used, sizeof errors - used, "%s\"%s\":%" PRIu64,
                                 used ? "," : "", error_counts[i].key, error_counts[i].count);
    }
    printf(
        "{\"target\":\"nats\",\"send_asap\":%s,\"mode\":\"%s\",\"clients\":%zu,\"workers\":%zu,"
        "\"inflight\":%zu,\"size\":%zu,\"sent\":%" PRIu64 ",\"ok\":%" PRIu64
        ",\"errors\":{%s},\"seconds\":%.6f,\"requests_per_second\":%.3f,"
        "\"megabytes_per_second\":%.6f,\"latency_us\":{\"p50\":%.3f,\"p90\":%.3f,"
        "\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f,\"mean\":%.3f}}\n",
        settings->send_asap ? "true" : "false", mode, clients, settings->workers, window, size,
        total.sent, total.ok, errors, seconds, rate, rate * (double)size / 1e6,
        percentile_us(&total.latency, 0.50), percentile_us(&total.latency, 0.90),
        percentile_us(&total.latency, 0.99), percentile_us(&total.latency, 0.999),
        total.latency.count ? (double)total.latency.ns[total.latency.count - 1] / 1e3 : 0, mean_us);
    fflush(stdout);
    free(total.latency.ns);
    free(all);
    free(body);
}

// ---- command line ---------------------------------------------------------------------------

int main(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("nats_bench, cnats %s\n", nats_GetVersion());
        return 0;
    }
    const char* command = argv[1];
    const char* url = NULL;
    const char* subject = "echo";
    const char* queue = "echo";
    const char* modes = "sync,pipelined";
    size_t responders = 1;
    SizeList clients = parse_sizes("--clients", "1", 1, 1000);
    SizeList inflight = parse_sizes("--inflight", "16,256", 1, 100000);
    SizeList sizes = parse_sizes("--size", "32", 0, (size_t)64 << 20);
    size_t workers = 0;
    double duration_s = 2.0;
    double warmup_s = 0.3;
    bool send_asap = false;
    for (int i = 2; i < argc; ++i) {
        const char* flag = argv[i];
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            fputs(kUsage, stdout);
            return 0;
        }
        if (strcmp(flag, "--send-asap") == 0) {
            send_asap = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "nats_bench: %s needs a value (see --help)\n", flag);
            return 2;
        }
        const char* value = argv[++i];
        if (strcmp(flag, "--url") == 0)
            url = value;
        else if (strcmp(flag, "--subject") == 0)
            subject = value;
        else if (strcmp(flag, "--queue") == 0)
            queue = value;
        else if (strcmp(flag, "--mode") == 0)
            modes = value;
        else if (strcmp(flag, "--responders") == 0)
            responders = parse_count(flag, value, 1, 500);
        else if (strcmp(flag, "--clients") == 0)
            clients = parse_sizes(flag, value, 1, 1000);
        else if (strcmp(flag, "--inflight") == 0)
            inflight = parse_sizes(flag, value, 1, 100000);
        else if (strcmp(flag, "--size") == 0)
            sizes = parse_sizes(flag, value, 0, (size_t)64 << 20);
        else if (strcmp(flag, "--workers") == 0)
            workers = parse_count(flag, value, 0, 500);
        else if (strcmp(flag, "--duration") == 0)
            duration_s = parse_seconds(flag, value, 0.1);
        else if (strcmp(flag, "--warmup") == 0)
            warmup_s = parse_seconds(flag, value, 0);
        else {
            fprintf(stderr, "nats_bench: unknown option %s (see --help)\n", flag);
            return 2;
        }
    }
    if (url == NULL) {
        fprintf(stderr, "nats_bench: --url nats://HOST:PORT is required (see --help)\n");
        return 2;
    }
    if (strcmp(command, "respond") == 0) return respond(url, subject, queue, responders, send_asap);
    if (strcmp(command, "load") != 0) {
        fprintf(stderr, "nats_bench: unknown command %s: respond or load (see --help)\n", command);
        return 2;
    }

    // Same sweep order as zbench: mode, then size, then window, then clients.
    char* mode_list = strdup(modes);
    for (char* mode = strtok(mode_list, ","); mode != NULL; mode = strtok(NULL, ",")) {
        if (strcmp(mode, "sync") != 0 && strcmp(mode, "pipelined") != 0) {
            fprintf(stderr, "nats_bench: --mode %s: expected sync and/or pipelined\n", mode);
            return 2;
        }
    }
    free(mode_list);
    natsOptions* options = connection_options(url, send_asap);
    const LoadSettings settings = {url, subject, duration_s, warmup_s, workers, send_asap};
    mode_list = strdup(modes);
    for (char* mode = strtok(mode_list, ","); mode != NULL; mode = strtok(NULL, ",")) {
        const bool sync = strcmp(mode, "sync") == 0;
        const SizeList windows = sync ? parse_sizes("--inflight", "1", 1, 1) : inflight;
        for (size_t s = 0; s < sizes.count; ++s)
            for (size_t w = 0; w < windows.count; ++w)
                for (size_t c = 0; c < clients.count; ++c)
                    run_point(&settings, options, mode, clients.values[c], windows.values[w],
                              sizes.values[s]);
    }
    free(mode_list);
    natsOptions_Destroy(options);
    nats_Close();
    return 0;
}
