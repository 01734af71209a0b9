#!/usr/bin/env bash
# Helpers shared by the TIPC scripts (sourced, not run).
#
# A train_infer_python.txt is split into sections by header lines such as
#   ===========================train_params===========================
# and holds "key:value" lines. A value is either plain ("cpu"), a list of
# alternatives separated by "|" ("True|False"), or per-mode values
# ("lite_train_lite_infer=20|whole_train_whole_infer=1000"). "null" means unset.

TIPC_MODES="lite_train_lite_infer lite_train_whole_infer whole_infer whole_train_whole_infer"

# func_parser_key "key:value" -> key
func_parser_key() {
    local line="$1"
    echo "${line%%:*}"
}

# func_parser_value "key:value" -> value (everything after the first ":")
func_parser_value() {
    local line="$1"
    echo "${line#*:}"
}

# func_section_value FILE SECTION KEY -> the value of KEY inside SECTION (empty if absent)
func_section_value() {
    awk -v sec="$2" -v key="$3" '
        { sub(/\r$/, "") }
        /^=+[A-Za-z0-9_]+=+$/ { cur = $0; gsub(/=/, "", cur); next }
        cur == sec {
            i = index($0, ":")
            if (i > 0 && substr($0, 1, i - 1) == key) { print substr($0, i + 1); exit }
        }' "$1"
}

# func_has_key FILE SECTION KEY -> exit 0 if KEY is present in SECTION
func_has_key() {
    awk -v sec="$2" -v key="$3" '
        { sub(/\r$/, "") }
        /^=+[A-Za-z0-9_]+=+$/ { cur = $0; gsub(/=/, "", cur); next }
        cur == sec { i = index($0, ":"); if (i > 0 && substr($0, 1, i - 1) == key) { found = 1; exit } }
        END { exit(found ? 0 : 1) }' "$1"
}

# func_mode_value VALUE MODE -> the part of VALUE for MODE; VALUE itself when it is not per-mode;
# "null" when VALUE is per-mode but names no value for MODE.
func_mode_value() {
    local value="$1" mode="$2" item m per_mode=0
    local -a items
    IFS='|' read -r -a items <<< "$value"
    for item in "${items[@]}"; do
        for m in $TIPC_MODES; do
            if [[ "$item" == "${m}="* ]]; then
                per_mode=1
                if [ "$m" = "$mode" ]; then
                    echo "${item#"${m}"=}"
                    return 0
                fi
            fi
        done
    done
    if [ "$per_mode" = 1 ]; then echo "null"; else echo "$value"; fi
}

# func_is_null VALUE -> exit 0 when VALUE is empty or null
func_is_null() {
    [ -z "$1" ] || [ "$1" = "null" ] || [ "$1" = "None" ]
}

# func_check_python PYTHON TAG -> exit 0 if PYTHON imports paddle and paddleseg_ext; else print one
# line saying what failed and how to get the environment, and exit 1
func_check_python() {
    local py="$1" tag="$2" err hint=""
    if ! command -v "$py" > /dev/null 2>&1; then
        err="not found"
    else
        err=$("$py" -c "import paddle, paddleseg_ext" 2>&1 > /dev/null | tail -n 1) && return 0
    fi
    [ -x .venv/bin/python ] && hint="; activate the environment first: source .venv/bin/activate"
    [ -x .venv/bin/python ] || hint="; make the environment with bash scripts/setup_env.sh, then: source .venv/bin/activate"
    echo "$tag python '$py' cannot import paddle and paddleseg_ext (${err:-failed})$hint" >&2
    return 1
}

# func_set_params KEY VALUE -> "KEY VALUE", or nothing when VALUE is null
func_set_params() {
    if func_is_null "$2"; then echo ""; else echo "$1 $2"; fi
}

# status_check RC COMMAND RESULTS_LOG MODEL_NAME STEP_LOG SECONDS
# Appends one "Run successfully with command ..." / "Run failed with command ..." line.
TIPC_FAILED=0
TIPC_PASSED=0
status_check() {
    local rc="$1" cmd="$2" results="$3" model="$4" step_log="$5" secs="${6:-?}"
    if [ "$rc" -eq 0 ]; then
        TIPC_PASSED=$((TIPC_PASSED + 1))
        echo "Run successfully with command - ${model} - ${cmd} - ${step_log} - ${secs}s" >> "$results"
        echo -e "    \033[32mRun successfully\033[0m (${secs}s)"
    else
        TIPC_FAILED=$((TIPC_FAILED + 1))
        echo "Run failed with command - ${model} - ${cmd} - ${step_log} - ${secs}s" >> "$results"
        echo -e "    \033[31mRun failed\033[0m (exit ${rc}, ${secs}s); see ${step_log}"
        if [ -f "$step_log" ]; then tail -n 15 "$step_log" | sed 's/^/    | /'; fi
    fi
}

# run_step NAME COMMAND STEP_LOG RESULTS_LOG MODEL_NAME: run COMMAND (a shell string), log it, check it
run_step() {
    local name="$1" cmd="$2" step_log="$3" results="$4" model="$5" start rc
    echo "[TIPC] ${model} ${name}: ${cmd}"
    start=$(date +%s.%N)
    eval "$cmd" > "$step_log" 2>&1
    rc=$?
    status_check "$rc" "$cmd" "$results" "$model" "$step_log" \
        "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    return "$rc"
}
