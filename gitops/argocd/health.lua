-- Argo CD health check for machine-learning.org/MLModelDeployment.
-- Argo CD passes the live object as `obj` and reads back {status = ..., message = ...}.
--   Missing      the operator has written no status yet (is it installed and watching?)
--   Progressing  the operator has not yet observed the latest spec, the rollout is under way (a
--                canary's steps and promotion included), or it waits for capacity (phase Pending:
--                GPUs no node has free, a quota), with the reason
--   Suspended    a canary paused at its weight: its analysis was inconclusive (too few requests,
--                no Prometheus), judged again every interval
--   Healthy      Ready=True at the latest generation
--   Degraded     phase Degraded or Failed (a stuck rollout, a canary rolled back, an image that
--                cannot run, a bad spec)
local hs = {}

local function ready_condition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function explain(status, ready, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or next(status) == nil then
  hs.status = "Missing"
  hs.message = "No status yet: the mlmodel-operator has not reconciled this resource"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local rollout = status.rollout
if rollout ~= nil and (rollout.phase == "Paused" or rollout.phase == "Progressing" or rollout.phase == "Promoting")
    and status.phase ~= "Degraded" and status.phase ~= "Failed" then
  hs.status = rollout.phase == "Paused" and "Suspended" or "Progressing"
  hs.message = rollout.message or ("Canary " .. rollout.phase)
  return hs
end

local ready = ready_condition(status)
local ready_current = ready ~= nil
  and (ready.observedGeneration == nil or generation == nil or ready.observedGeneration >= generation)

if ready_current and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(status, ready, "Model serving")
  return hs
end

if status.phase == "Degraded" or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(status, ready, "Phase " .. status.phase)
  return hs
end

hs.status = "Progressing"
hs.message = explain(status, ready, "Rolling out")
return hs
