// Reference page: claims the order named in the page query (?order=NO) and shows the outcome.
const { createClaimClient } = require("../../claim-logic");

const API_BASE = "https://tickets.example.com"; // your cardpipe api
const APPID = "wxYOURMINIPROGRAM";

Page({
  data: { orderNo: "", status: "idle", message: "" },

  onLoad(query) {
    this.client = createClaimClient({ wx, apiBase: API_BASE, appid: APPID });
    this.setData({ orderNo: query.order || "" });
  },

  async onClaim() {
    this.setData({ status: "working", message: "" });
    try {
      const outcome = await this.client.claimOrder(this.data.orderNo);
      const messages = {
        claimed: "Your ticket is in your WeChat card holder.",
        done: "This order's tickets are already in your card holder.",
        cancelled: "Cancelled. Tap again to add your ticket.",
        failed: "WeChat could not add the ticket. Tap again to retry.",
      };
      this.setData({ status: outcome.status, message: messages[outcome.status] });
    } catch (error) {
      this.setData({ status: "error", message: error.message });
    }
  },
});
