-- wrk script for bench/run.sh: POST create_voucher with a JSON body and no
-- username, so that every request creates a new voucher with a random one.
-- The API key comes in wrk's -H 'X-API-Key: ...'. Reports like wrk-report.lua.
dofile("bench/wrk-report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"action":"create_voucher","valid_for":"1 day","download_limit":1024,"upload_limit":512}'
