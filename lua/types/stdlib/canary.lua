---@meta canary
-- Generated from stdlib/canary.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type string
M.DEFAULT_STEPS = "10,25,50,100"

---@type number
M.DEFAULT_PAUSE = 60

---The traffic weights of a `steps=` parameter: whole percentages from 1 to
---100, strictly increasing, the last one 100. Raises code="usage" naming
---the parameter otherwise.
---@param text string e.g. "10,25,50,100"
---@return integer[]
function M.parse_steps(text) end

---Checks the `pause=` parameter (seconds of analysis at each step).
---@param pause number
---@return number
function M.check_pause(pause) end

---The replica counts of each step: with `total` replicas, weight w gives
---the new colour ceil(total*w/100) and the old one the rest. `traffic` is
---the share of ready pods the new colour then has (what kube-proxy sends
---it), which rounding makes differ from the weight asked for.
---@param weights integer[]
---@param total integer
---@return {weight: integer, new: integer, old: integer, traffic: number}[]
function M.plan(weights, total) end

---Prints the plan (stdout): the steps, the replicas of each colour, the
---traffic share the new colour gets.
---@param p {app: string, tag: string, from: string, to: string, from_tag: string?, replicas: integer, pause: number, steps: table[]}
function M.print_plan(p) end

---Undo actions `bgrun resume` runs from a journal's recorded data.
---@type table
M.undo = nil

---The steps of a canary, in the bluegreen.deploy way (see bluegreen.steps):
---detect, plan, update (the new colour at the first step's replicas),
---rollout, smoke, switch (the canary's steps and the final switch),
---retire (commit, old colour to 0).
---@type table
M.steps = nil

---Runs a canary release of opts.tag. opts: those of bluegreen.deploy (app,
---namespace, context, tag, replicas, container, skip_tests, checks, smoke,
---smoke_access, smoke_url, rollout_timeout, switch_timeout, monitor,
---retire_delay, hooks, on_tick), and weights (from parse_steps) and pause
---(seconds of analysis at each step). Returns the canary's report: from,
---to, image, replicas, pause, steps = {step, weight, traffic, replicas =
---{colour = n}, analysis, checks, failed_checks, problems, measurements, seconds},
---aborted, switch_seconds, rollback_seconds, reaction_ms, total_seconds.
---@param c any k8s client
---@param opts table
---@return table report
function M.run(c, opts) end

---Prints the report of a finished canary (text, or one JSON object with
-----log-format json).
---@param cr table canary.run's report
function M.print_report(cr) end

return M
