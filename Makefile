# intake: one plain Makefile. Objects under build/, header dependencies via -MMD -MP.
#   make            build/intaked, build/intake, build/intake-scand
#   make run        install missing packages, build, run intaked on etc/intake.conf
#   make test       install missing packages, build, unit tests (plain and
#                   ASan+UBSan), fuzz targets on their corpora, integration
#                   tests against the real daemon (plain and ASan+UBSan builds
#                   side by side)
#   make bench      issue 12's performance figures, each next to a baseline
#                   measured in the same run (scripts/bench*; BENCH_QUICK=1:
#                   smaller sizes, fewer runs)
#   make install    PREFIX=/usr/local DESTDIR=

CC      ?= cc
PYTHON  := /usr/bin/python3
PREFIX  ?= /usr/local
BUILD   ?= build
SANITIZE ?=

PKGS    := libcjson openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lcjson -lssl -lcrypto)
# Debian's libev ships no .pc file.
EV_CFLAGS  := $(shell pkg-config --cflags libev 2>/dev/null)
EV_LIBS    := $(shell pkg-config --libs libev 2>/dev/null || echo -lev)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
           -fno-strict-aliasing -D_FILE_OFFSET_BITS=64 \
           -Isrc -Iworkers $(PKG_CFLAGS) $(EV_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) $(EV_LIBS) -lpthread -lm
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# What every program shares.
CORE    := src/log.c src/config.c src/store.c src/record.c src/upload.c src/resume.c src/message.c src/utf8.c src/proxy.c src/token.c src/origin.c
# Worker modules without I/O loops: linked into the daemon and the unit tests.
WORKER_LIB := workers/tcp_line.c workers/http.c workers/ws_frame.c workers/scan.c workers/jobs.c \
              src/metrics.c
DAEMON  := src/main.c src/master.c src/sweep.c src/net.c src/notify.c src/pidfile.c src/proctitle.c \
           workers/worker.c workers/conn.c workers/tcp.c workers/ws.c workers/web.c workers/session.c workers/tls.c workers/page.S \
           workers/hook.c workers/publish.c \
           $(WORKER_LIB)
CLI     := src/intake.c src/cli_progress.c src/cli_tls.c
SCAND   := workers/scand.c workers/scand_dirs.c workers/scand_tempfiles.c src/log.c src/utf8.c src/proctitle.c src/config.c src/origin.c

obj = $(patsubst %.S,$(BUILD)/obj/%.o,$(patsubst %.c,$(BUILD)/obj/%.o,$(1)))

UNIT_TESTS := config log store record message upload tcp_line http ws_frame scan proxy metrics token origin sweep scand_dirs scand_tempfiles
UNIT_BINS  := $(patsubst %,$(BUILD)/tests/test_%,$(UNIT_TESTS))

.SECONDARY:

.PHONY: all run test unit unit-asan integration integration-asan integration-both asan-all deps bench fuzz fuzz-smoke install clean

all: $(BUILD)/intaked $(BUILD)/intake $(BUILD)/intake-scand

# Only intake-scand links libclamav (GPL-2.0); intaked reaches it by socket.
CLAMAV_LIBS := $(shell pkg-config --libs libclamav 2>/dev/null || echo -lclamav)
$(BUILD)/intake-scand: $(call obj,$(SCAND))
	$(CC) $(LDFLAGS) -o $@ $^ $(CLAMAV_LIBS) -lpthread

# Only intaked talks to systemd (sd_notify, src/notify.c) and to NATS (cnats,
# workers/publish.c).
SYSTEMD_LIBS := $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd)
NATS_LIBS := $(shell pkg-config --libs libnats 2>/dev/null || echo -lnats)
$(BUILD)/intaked: $(call obj,$(CORE) $(DAEMON))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(SYSTEMD_LIBS) $(NATS_LIBS)

$(BUILD)/intake: $(call obj,$(CORE) $(CLI))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Benchmark-only load clients (not installed): tests/tools/*.c.
BENCH_TOOLS := $(BUILD)/wsbench $(BUILD)/tcpload $(BUILD)/idleconns
$(BUILD)/wsbench: $(BUILD)/obj/tests/tools/wsbench.o $(call obj,workers/ws_frame.c)
	$(CC) $(LDFLAGS) -o $@ $^
$(BUILD)/tcpload: $(BUILD)/obj/tests/tools/tcpload.o
	$(CC) $(LDFLAGS) -o $@ $^
$(BUILD)/idleconns: $(BUILD)/obj/tests/tools/idleconns.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) -c -o $@ $<

# .incbin is invisible to -MMD.
$(BUILD)/obj/workers/page.o: workers/page.html

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(call obj,$(CORE) $(WORKER_LIB))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	@./scripts/deps.sh

run: deps all
	@mkdir -p var run
	@echo "intake: upload page http://127.0.0.1:8080/  raw TCP 127.0.0.1:9090"
	@echo "intake: try: $(BUILD)/intake 127.0.0.1:9090 README.md"
	./$(BUILD)/intaked -c etc/intake.conf

# The sweep belongs to the daemon's master; its test links it too.
$(BUILD)/tests/test_sweep: $(call obj,src/sweep.c)
# intake-scand's mkdir/rmdir: its test gets them as the program does.
$(BUILD)/tests/test_scand_dirs: $(call obj,workers/scand_dirs.c)
# intake-scand's write calls, likewise.
$(BUILD)/tests/test_scand_tempfiles: $(call obj,workers/scand_tempfiles.c)

# Fault injection: test_upload makes SHA-256 and the spool's fsync fail; test_store counts,
# slows and fails directory fsyncs.
$(BUILD)/tests/test_upload: LDFLAGS += -Wl,--wrap=EVP_DigestUpdate -Wl,--wrap=fsync
$(BUILD)/tests/test_store: LDFLAGS += -Wl,--wrap=fsync

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do $$t; done

unit-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined CC=clang unit

# The integration suite against the plain build, and against intaked built
# with ASan+UBSan (the browser and 1 GiB tests are left to the plain run;
# its pytest cache is its own).
RUN_INTEGRATION := $(PYTHON) -m pytest -q tests/integration
RUN_INTEGRATION_ASAN := INTAKED=build/asan/intaked $(PYTHON) -m pytest -q \
    -o cache_dir=build/.pytest_cache-asan tests/integration \
    --deselect tests/integration/test_browser.py --deselect tests/integration/test_big.py \
    --deselect tests/integration/test_tls.py::test_upload_page_over_https

asan-all:
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined CC=clang all

integration: all
	$(RUN_INTEGRATION)

integration-asan: all asan-all
	$(RUN_INTEGRATION_ASAN)

# The steps run one after another; each builds what it needs on every core.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory -j$(JOBS) unit
	@$(MAKE) --no-print-directory -j$(JOBS) unit-asan
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-smoke
	@$(MAKE) --no-print-directory -j$(JOBS) integration-both

# Both integration runs side by side: a test mostly waits on the daemon, so
# the two take little more than the longer alone. Both builds are made
# first (the runs build nothing); each run has its own port range
# (conftest.py) and its own log, shown at the end. The background run gets
# SIGINT back (a shell starts background jobs with it ignored), so Ctrl-C
# stops both and their fixtures stop what they started.
integration-both: all asan-all
	@echo "integration and integration-asan side by side (logs: build/integration*.log)"
	@INTAKE_TEST_PORTS=20000-25999 env --default-signal=INT,QUIT $(RUN_INTEGRATION_ASAN) \
	    > build/integration-asan.log 2>&1 & asan=$$!; \
	 INTAKE_TEST_PORTS=26000-31999 $(RUN_INTEGRATION) > build/integration.log 2>&1; plain=$$?; \
	 wait $$asan; asanrc=$$?; \
	 for s in integration-asan integration; do \
	    echo "== $$s"; grep -E '^(FAILED|ERROR) | in [0-9.]+s( \(|$$)' build/$$s.log | tail -40; done; \
	 if [ $$plain -ne 0 ] || [ $$asanrc -ne 0 ]; then \
	    echo "integration: plain exit $$plain, asan exit $$asanrc; see build/integration*.log"; exit 1; fi

# libFuzzer targets (clang): build/fuzz/fuzz_<parser>. `make fuzz` runs each
# for FUZZ_SECONDS on its seed corpus; `make fuzz-smoke` (part of `make test`)
# runs each for a fixed FUZZ_RUNS inputs from its seed corpus with a fixed
# seed, so a change that crashes a parser on its corpus fails the tests.
FUZZ_TARGETS := http ws_frame tcp_line upload_header config_line escape
FUZZ_RUNS ?= 200000
FUZZ_SECONDS ?= 20
# The parsers are compiled once, instrumented for libFuzzer (fuzzer-no-link)
# and the sanitizers; each target is its harness (-DTARGET_<NAME> selects the
# parser in fuzz_parsers.c) linked with those objects.
FUZZ_CFLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -Wno-macro-redefined -Isrc -Iworkers $(PKG_CFLAGS)
FUZZ_SAN    := -fsanitize=fuzzer-no-link,address,undefined
FUZZ_LIB_SRCS := $(CORE) workers/tcp_line.c workers/http.c workers/ws_frame.c
FUZZ_LIB_OBJS := $(patsubst %.c,build/fuzz/obj/%.o,$(FUZZ_LIB_SRCS))
build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) $(FUZZ_SAN) -MMD -MP -c -o $@ $<
-include $(FUZZ_LIB_OBJS:.o=.d)

build/fuzz/fuzz_%: tests/fuzz/fuzz_parsers.c $(FUZZ_LIB_OBJS)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined \
	    -DTARGET_$(shell echo $* | tr a-z A-Z) -o $@ $^ $(PKG_LIBS) -lm

# Parsers with a fuzz file of their own (tests/fuzz/fuzz_<name>.c).
FUZZ_TARGETS += record token origin
build/fuzz/fuzz_record: tests/fuzz/fuzz_record.c build/fuzz/obj/src/record.o
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $^
build/fuzz/fuzz_token: tests/fuzz/fuzz_token.c build/fuzz/obj/src/token.o
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $^ $(PKG_LIBS)
build/fuzz/fuzz_origin: tests/fuzz/fuzz_origin.c build/fuzz/obj/src/origin.o
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $^

fuzz: $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus-$$t; \
	    build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=16384 \
	        $$( [ $$t = http ] && echo -dict=tests/fuzz/http.dict ) \
	        build/fuzz/corpus-$$t tests/fuzz/corpus/$$t 2>&1 | tail -1; done

fuzz-smoke: $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	    rm -rf build/fuzz/smoke-$$t; mkdir -p build/fuzz/smoke-$$t; \
	    build/fuzz/fuzz_$$t -runs=$(FUZZ_RUNS) -seed=1 -max_len=16384 \
	        $$( [ $$t = http ] && echo -dict=tests/fuzz/http.dict ) \
	        build/fuzz/smoke-$$t tests/fuzz/corpus/$$t > build/fuzz/smoke-$$t.log 2>&1 \
	        || { tail -40 build/fuzz/smoke-$$t.log; echo "fuzz_$$t failed"; exit 1; }; \
	    echo "fuzz_$$t: $$(tail -1 build/fuzz/smoke-$$t.log)"; \
	done

# One script per figure, in the order of issue 12's table; then resuming.
bench: deps all $(BENCH_TOOLS)
	./scripts/bench.sh
	$(PYTHON) scripts/bench_idle.py
	$(PYTHON) scripts/bench_scan.py
	$(PYTHON) scripts/bench_latency.py
	$(PYTHON) scripts/bench_cpu.py
	$(PYTHON) scripts/bench_ws.py
	$(PYTHON) scripts/bench_resume.py
	$(PYTHON) scripts/bench_deliver.py

# The installed configuration points at FHS places (the checkout's one at ./var).
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/etc/intake/signatures $(DESTDIR)$(PREFIX)/share/intake \
	    $(DESTDIR)$(PREFIX)/share/doc/intake $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
	    $(DESTDIR)$(PREFIX)/share/intake/hooks
	install -m 755 $(BUILD)/intaked $(BUILD)/intake-scand $(DESTDIR)$(PREFIX)/sbin/
	install -m 755 $(BUILD)/intake $(DESTDIR)$(PREFIX)/bin/intake
	install -m 644 etc/signatures/*.hdb etc/signatures/*.ndb etc/signatures/README.md \
	    $(DESTDIR)$(PREFIX)/etc/intake/signatures/
	sed -e 's|^pid_file .*|pid_file       /run/intake/intaked.pid|' \
	    -e 's|^error_log .*|error_log      /var/log/intake/error.log|' \
	    -e 's|^spool_dir .*|spool_dir      /var/lib/intake/spool|' \
	    -e 's|^accept_dir .*|accept_dir     /var/lib/intake/accepted|' \
	    -e 's|^quarantine_dir .*|quarantine_dir /var/lib/intake/quarantine|' \
	    -e 's|^scanner_socket .*|scanner_socket /run/intake/scand.sock|' \
	    -e 's|^signature_dir .*|signature_dir  $(PREFIX)/etc/intake/signatures|' \
	    etc/intake.conf > $(DESTDIR)$(PREFIX)/etc/intake/intake.conf.new
	@if [ -e $(DESTDIR)$(PREFIX)/etc/intake/intake.conf ]; then \
	    echo "kept your $(PREFIX)/etc/intake/intake.conf; the new one is intake.conf.new"; \
	else mv $(DESTDIR)$(PREFIX)/etc/intake/intake.conf.new $(DESTDIR)$(PREFIX)/etc/intake/intake.conf; fi
	install -m 644 etc/nginx/intake-http.conf etc/nginx/intake-stream.conf \
	    etc/nginx/intake-http-tls.conf etc/nginx/intake-stream-tls.conf \
	    etc/nginx/intake-hosts-http.conf etc/nginx/intake-hosts-stream.conf \
	    etc/systemd/intaked.service $(DESTDIR)$(PREFIX)/share/intake/
	install -m 755 etc/hooks/rclone-copy etc/hooks/webhook-curl $(DESTDIR)$(PREFIX)/share/intake/hooks/
	install -m 644 etc/logrotate.d/intake $(DESTDIR)$(PREFIX)/share/intake/intake.logrotate
	install -m 644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/intake/
	install -m 644 docs/protocol.md docs/configuration.md $(DESTDIR)$(PREFIX)/share/doc/intake/
	install -m 644 man/intake.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/intake.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 man/intaked.8 man/intake-scand.8 $(DESTDIR)$(PREFIX)/share/man/man8/

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
