#!/usr/bin/env bash
# The main job end to end, against the built-in emulator, which serves both clouds on one port:
# start it (with its reference CustomLLM endpoint), apply examples/ (Volcengine and Alibaba Cloud
# sessions in one run), show the records, apply again (nothing to do), plan (no changes), probe
# the CustomLLM endpoints, print join tokens, stop the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
export RECONCILER_STATE="$work/state.db"
# The emulator accepts one access key pair, on both clouds.
demo_key_id=AKLTdemo demo_key_secret=demo-secret-access-key
export RECONCILER_VOLCENGINE__ACCESS_KEY_ID=$demo_key_id
export RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=$demo_key_secret
export RECONCILER_ALIYUN__ACCESS_KEY_ID=$demo_key_id
export RECONCILER_ALIYUN__ACCESS_KEY_SECRET=$demo_key_secret
# The ARTC app whose key signs each Alibaba Cloud agent's AuthToken (made at every Start); the
# emulator checks the tokens against the same app.
export RECONCILER_ALIYUN__ARTC_APP_ID=demo-artc-app RECONCILER_ALIYUN__ARTC_APP_KEY=demo-artc-app-key
# Demo values for the secret references in examples/ (see examples/README.md).
export VOICE_LLM_API_KEY=demo-llm-key VOICE_TTS_TOKEN=demo-tts-token
export VOICE_ASR_ACCESS_TOKEN=demo-asr-token VOICE_RTS_SIGNATURE=demo-rts-signature
export FRONT_DESK_LLM_QUERY="api_key=demo-front-desk-key"
# The RTC app key that signs Volcengine join tokens (`reconciler token volcengine`).
export RECONCILER_VOLCENGINE__APP_KEY=demo-rtc-app-key

reconciler emulator --port 0 --access-key-id "$demo_key_id" --secret-access-key "$demo_key_secret" \
  --artc-app-id "$RECONCILER_ALIYUN__ARTC_APP_ID" --artc-app-key "$RECONCILER_ALIYUN__ARTC_APP_KEY" \
  --custom-llm --custom-llm-api-key "$VOICE_LLM_API_KEY" >"$work/emulator.log" 2>&1 &
emulator=$!
trap '{ kill "$emulator" && wait "$emulator"; } 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$work/emulator.log" && break
  sleep 0.1
done
url=$(sed -n 's/^emulator listening on //p' "$work/emulator.log")
[ -n "$url" ] || { cat "$work/emulator.log"; exit 1; }
export RECONCILER_VOLCENGINE__ENDPOINT="$url" RECONCILER_ALIYUN__ENDPOINT="$url"
echo "== emulator at $url"

echo "== validate examples/"
reconciler validate examples
echo "== apply examples/"
reconciler apply examples --auto-approve
echo "== state list"
reconciler state list
echo "== apply again: nothing to do (it first refreshes the Alibaba Cloud records with Describe)"
reconciler apply examples --auto-approve
echo "== state list: STATUS and OBSERVED of the Alibaba Cloud agents are what the cloud said"
reconciler state list
echo "== plan --detailed-exitcode (0: no changes)"
reconciler plan examples --detailed-exitcode
echo "== running in the emulator"
python3 - "$url" <<'PY'
import json, sys, urllib.request
get = lambda path: json.load(urllib.request.urlopen(sys.argv[1] + path))
print(len(get("/_emulator/tasks")["tasks"]), "Volcengine tasks running")
live = [i for i in get("/_emulator/aliyun/instances")["instances"] if i["Status"] != "Finished"]
print(len(live), "Alibaba Cloud agent instances live")
PY
echo "== probe: examples/ with their CustomLLM Urls pointed at the emulator's reference endpoint"
llm_url="$url/custom-llm/v1/chat/completions"
cp -R examples "$work/probed"
for file in "$work/probed/support.json" "$work/probed/lobby.yaml" "$work/probed/apac/kiosk.yaml"; do
  sed -E "s#https://llm(-sg)?\.example\.com/v1/chat-stream#$llm_url#" "$file" >"$file.new"
  mv "$file.new" "$file"
done
reconciler probe "$work/probed"
echo "== join tokens for a caller of support-en and of front-desk-07 (each token is its last line)"
reconciler token volcengine --app-id 661e4b8f2f1d3c0123456789 --room support-en-01 --user caller-en-01
reconciler token aliyun --channel ch-front-desk-07 --user caller-07
echo "== stop the emulator (pid $emulator)"
kill "$emulator"
wait "$emulator" || true
echo "emulator stopped"
