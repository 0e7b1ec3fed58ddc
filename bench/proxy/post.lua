-- post.lua: wrk script posting a realistic ~1 KB chat-completions body.
-- STREAM=1 in the environment asks for an SSE response.
local stream = os.getenv("STREAM") == "1"
local model = os.getenv("MODEL") or "triage"
local question = "A train leaves the station at 9:40 and travels 180 km at an average " ..
  "speed of 72 km/h, then waits 25 minutes and covers another 96 km at 64 km/h. " ..
  "At what time does it arrive, and what was its average speed over the whole trip " ..
  "including the stop? Show your reasoning step by step and give the final answer " ..
  "on its own line. Also explain which of the intermediate quantities could be " ..
  "skipped if we only wanted the arrival time, and why the average speed is not the " ..
  "mean of the two speeds. Finally, suggest a quick sanity check for the result."
local body = '{"model":"' .. model .. '","stream":' .. tostring(stream) ..
  ',"temperature":0.2,"max_tokens":512,"messages":[' ..
  '{"role":"system","content":"You are a careful assistant that answers concisely ' ..
  'and shows the key steps of any calculation."},' ..
  '{"role":"user","content":"' .. question .. '"}]}'
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
