#!/usr/bin/env bash
# The main job end to end, against the built-in emulator: start it (with its reference CustomLLM
# endpoint), apply examples/, show the records, apply again (nothing to do), plan (no changes),
# probe the CustomLLM endpoints, print a join token, stop the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
export RECONCILER_STATE="$work/state.db"
export RECONCILER_VOLCENGINE__ACCESS_KEY_ID=AKLTdemo
export RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=demo-secret-access-key
# Demo values for the secret references in examples/ (see examples/README.md).
export VOICE_LLM_API_KEY=demo-llm-key VOICE_TTS_TOKEN=demo-tts-token
export VOICE_ASR_ACCESS_TOKEN=demo-asr-token VOICE_RTS_SIGNATURE=demo-rts-signature
# The RTC app key that signs join tokens (`reconciler token`).
export RECONCILER_VOLCENGINE__APP_KEY=demo-rtc-app-key

reconciler emulator --port 0 --access-key-id "$RECONCILER_VOLCENGINE__ACCESS_KEY_ID" \
  --secret-access-key "$RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY" \
  --custom-llm --custom-llm-api-key "$VOICE_LLM_API_KEY" >"$work/emulator.log" 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$work/emulator.log" && break
  sleep 0.1
done
url=$(sed -n 's/^emulator listening on //p' "$work/emulator.log")
[ -n "$url" ] || { cat "$work/emulator.log"; exit 1; }
export RECONCILER_VOLCENGINE__ENDPOINT="$url"
echo "== emulator at $url"

echo "== validate examples/"
reconciler validate examples
echo "== apply examples/"
reconciler apply examples --auto-approve
echo "== state list"
reconciler state list
echo "== apply again: nothing to do"
reconciler apply examples --auto-approve
echo "== plan --detailed-exitcode (0: no changes)"
reconciler plan examples --detailed-exitcode
echo "== running tasks in the emulator"
python3 -c "import json,sys,urllib.request; t=json.load(urllib.request.urlopen(sys.argv[1]+'/_emulator/tasks')); print(len(t['tasks']), 'tasks running')" "$url"
echo "== probe: examples/ with their CustomLLM Urls pointed at the emulator's reference endpoint"
llm_url="$url/custom-llm/v1/chat/completions"
cp -R examples "$work/probed"
for file in "$work/probed/support.json" "$work/probed/lobby.yaml" "$work/probed/apac/kiosk.yaml"; do
  sed -E "s#https://llm(-sg)?\.example\.com/v1/chat-stream#$llm_url#" "$file" >"$file.new"
  mv "$file.new" "$file"
done
reconciler probe "$work/probed"
echo "== a join token for a caller of support-en (the token is the last line)"
reconciler token volcengine --app-id 661e4b8f2f1d3c0123456789 --room support-en-01 --user caller-en-01
